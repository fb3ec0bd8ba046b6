"""The speech task through the command line, on a tiny espeak-ng set (3 words x 4 voices x 2 takes):
train a word classifier and a CTC recogniser, the run folder, predict / evaluate / report,
`datasets fetch`, compare's default models, resume after Ctrl-C equal to an uninterrupted run,
and bad inputs -> exit code 2 with one line on stderr."""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from scipy.signal import resample_poly

from deepskeptic.cli import main
from deepskeptic.data import spoken
from deepskeptic.runs import Run
from deepskeptic.tasks import get_task
from deepskeptic.tasks.speech.jobs import SpeechJob
from cli_helpers import assert_ctrl_c_resume_is_exact, cli, user_error
from conftest import TIME_FIELDS, tiny_speech_spec

pytestmark = [pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
              pytest.mark.usefixtures("one_thread")]
SRC = Path(__file__).resolve().parents[1] / "src"
TINY = tiny_speech_spec()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return spoken.synthesise(tmp_path_factory.mktemp("data") / "tiny", TINY, progress=False).parent


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lstm"
    assert main(["train", "speech", "--data", str(tiny), "--model", "lstm", "--epochs", "2",
                 "--bidirectional", "--out", str(out), "--no-progress"]) == 0
    return out


def test_word_classifier_run_folder(trained):
    for name in ("config.json", "history.jsonl", "metrics.json", "model.safetensors", "report.html",
                 "test_predictions.json", "checkpoint/state.safetensors"):
        assert (trained / name).is_file(), name
    m = json.loads((trained / "metrics.json").read_text())
    assert {"test_wer", "test_cer", "test_accuracy", "train_seconds", "params", "flops_per_example",
            "device", "seed", "epochs", "confusion_matrix", "test_wer_per_voice"} <= set(m)
    assert m["test_wer"] == pytest.approx(1 - m["test_accuracy"])   # one word per utterance
    assert m["epochs"] == 2 and m["params"] > 0 and m["flops_per_example"] > 0
    config = json.loads((trained / "config.json").read_text())
    assert config["model_config"]["bidirectional"] is True
    info = config["data_info"]
    assert info["labels"] == ["one", "two", "zero"] and info["split_by"] == "manifest"
    assert set(m["test_wer_per_voice"]) == set(info["test_speakers"])
    assert not set(info["test_speakers"]) & set(info["train_speakers"])
    html = (trained / "report.html").read_text()
    assert "Error rate per test voice" in html and "log-mel spectrograms" in html and "<img" in html


def test_predict_and_evaluate(trained, tiny, capsys):
    wav = next((tiny / "audio").rglob("*.flac"))
    rc, out, _ = cli(capsys, "predict", trained, wav)
    assert rc == 0 and re.match(rf"{re.escape(str(wav))}: (zero|one|two)  confidence \d\.\d{{3}}", out)
    rc, out, _ = cli(capsys, "predict", trained, wav, "--json", "--top-k", "2")
    result = json.loads(out)
    assert result[0]["transcript"] in ("zero", "one", "two") and len(result[0]["top"]) == 2
    rc, out, _ = cli(capsys, "evaluate", trained)
    assert rc == 0
    metrics = json.loads(out)
    assert metrics["test_wer"] == pytest.approx(json.loads((trained / "metrics.json").read_text())["test_wer"])
    rc, out, _ = cli(capsys, "report", trained)
    assert rc == 0 and "report.html" in out


def test_predictor_on_waveforms_in_memory_equals_predict_json(trained, tiny, tmp_path, capsys):
    files = sorted((tiny / "audio").rglob("*.flac"))[:4]
    samples, rate = sf.read(files[0], dtype="float32")
    at_44k = resample_poly(samples, 441, 160).astype(np.float32)               # 16 kHz -> 44.1 kHz
    sf.write(tmp_path / "stereo.wav", np.stack([at_44k, 0.5 * at_44k], axis=1), 44100, subtype="FLOAT")
    files.append(tmp_path / "stereo.wav")
    rc, out, _ = cli(capsys, "predict", trained, *files, "--json", "--top-k", "2")
    assert rc == 0
    expected = json.loads(out)
    predictor = get_task("speech").predictor(Run.open(trained))
    waveforms = [sf.read(f, dtype="float32") for f in files]                    # (samples, rate) pairs
    assert waveforms[-1][0].shape[1] == 2 and waveforms[-1][1] == 44100
    names = [str(f) for f in files]
    assert predictor.predict(waveforms, names=names, top_k=2) == expected
    features, read_names = predictor.read(names)                                 # what the CLI computes
    assert read_names == names and predictor.predict(features, names=names, top_k=2) == expected
    assert [r["file"] for r in predictor.predict(waveforms[:2])] == ["0", "1"]


def test_ctc_recogniser_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "ctc"
    rc, stdout, err = cli(capsys, "train", "speech", "--data", tiny, "--model", "lstm-ctc", "--epochs", "1",
                          "--beam", "4", "--out", out, "--no-progress")
    assert rc == 0, err
    assert stdout.startswith("test_wer ")
    m = json.loads((out / "metrics.json").read_text())
    assert {"test_wer", "test_cer", "test_wer_greedy", "test_cer_greedy", "test_accuracy"} <= set(m)
    assert 0 <= m["test_cer"] and m["test_wer"] >= 0
    wav = next((tiny / "audio").rglob("*.flac"))
    rc, stdout, _ = cli(capsys, "predict", out, wav, "--json")
    (result,) = json.loads(stdout)
    assert set(result) == {"file", "transcript", "confidence", "greedy"} and 0 <= result["confidence"] <= 1
    predictor = get_task("speech").predictor(Run.open(out))
    assert predictor.predict([sf.read(wav, dtype="float32")], names=[str(wav)]) == [result]


def test_datasets_fetch_and_compare_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPSKEPTIC_DATA", str(tmp_path / "cache"))
    monkeypatch.setitem(spoken.SPECS, "spoken-digits", TINY)
    rc, out, _ = cli(capsys, "datasets")
    assert rc == 0 and re.search(r"spoken-digits\s+speech", out) and "datasets fetch spoken-digits" in out
    rc, out, _ = cli(capsys, "datasets", "fetch", "spoken-digits")
    assert rc == 0 and str(tmp_path / "cache" / "spoken-digits") in out
    assert (tmp_path / "cache" / "spoken-digits" / "manifest.csv").is_file()
    task = get_task("speech")
    assert task.models_for("spoken-digits") == ("mlp", "cnn", "lstm")
    assert task.models_for("spoken-digit-strings") == ("mlp-ctc", "lstm-ctc")


# ------------------------------------------------------------------ resume

def test_resume_after_ctrl_c_equals_uninterrupted(tiny, tmp_path, capsys, monkeypatch):
    args = ["train", "speech", "--data", str(tiny), "--model", "cnn", "--epochs", "3", "--seed", "2",
            "--batch-size", "8", "--no-progress"]
    # a real SIGINT before the fourth step (in epoch 2): the engine saves at the step boundary and stops
    assert_ctrl_c_resume_is_exact(monkeypatch, tmp_path, args, SpeechJob, at_step=4, time_keys=TIME_FIELDS)
    assert f"--resume {tmp_path / 'cut'}" in capsys.readouterr().err
    assert len((tmp_path / "cut" / "history.jsonl").read_text().splitlines()) == 3
    wa, wb = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------ bad input

def _folder_with(tmp_path: Path, tiny: Path, name: str, content: bytes | None) -> Path:
    """A word-folder data set of real recordings plus one file ``name`` holding ``content``."""
    root = tmp_path / "words"
    for k, f in enumerate(sorted((tiny / "audio").rglob("*.flac"))[:12]):
        word = ("yes", "no")[k % 2]
        (root / word).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / word / f"{k}.flac")
    if content is not None:
        (root / "yes" / name).write_bytes(content)
    return root


@pytest.mark.parametrize("case", ["empty", "not_audio", "row_nowhere", "outside_vocab", "open_transcripts",
                                  "unknown_name", "no_espeak"])
def test_bad_training_input(case, tiny, tmp_path, capsys, monkeypatch):
    data, model, match = None, "lstm", None
    if case == "empty":
        data, match = _folder_with(tmp_path, tiny, "blank.wav", b""), r"blank\.wav' is empty"
    elif case == "not_audio":
        data, match = _folder_with(tmp_path, tiny, "notes.ogg", b"just text\n"), r"notes\.ogg' is not readable audio"
    elif case == "row_nowhere":
        (tmp_path / "m.csv").write_text("path,transcript\nnowhere.wav,yes\n")
        data, match = tmp_path / "m.csv", r"row 2 points to 'nowhere.wav', which does not exist"
    elif case in ("outside_vocab", "open_transcripts"):
        wav = next((tiny / "audio").rglob("*.flac"))
        texts = [" ".join(p) for n in (2, 3) for p in itertools.product(("one", "two"), repeat=n)]  # 12 distinct
        if case == "outside_vocab":
            texts[0] = "1 2 3"
        rows = "".join(f"{wav},{t},v{k % 4}\n" for k, t in enumerate(texts))
        (tmp_path / "m.csv").write_text("path,transcript,speaker\n" + rows)
        data = tmp_path / "m.csv"
        model, match = (("lstm-ctc", r"row 2: transcript '1 2 3' has character\(s\) '1' '2' '3' outside")
                        if case == "outside_vocab" else ("mlp", r"never occur there .*use --model lstm-ctc"))
    elif case == "unknown_name":
        data, match = "spoken-digitz", r"unknown speech data set 'spoken-digitz': did you mean 'spoken-digits'"
    elif case == "no_espeak":
        monkeypatch.setenv("DEEPSKEPTIC_DATA", str(tmp_path / "empty-cache"))
        monkeypatch.setattr(spoken.shutil, "which", lambda name: None)
        data, match = "spoken-digits", r"espeak-ng is not installed.*apt-get install espeak-ng"
    user_error(capsys, "train", "speech", "--data", data, "--model", model, "--epochs", "1",
               "--out", tmp_path / "run", "--no-progress", match=match)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_bad_use_inputs(trained, tmp_path, capsys):
    (tmp_path / "notes.wav").write_text("hello\n")
    user_error(capsys, "predict", trained, tmp_path / "notes.wav", match=r"notes\.wav' is not readable audio")
    user_error(capsys, "predict", trained, tmp_path / "missing.wav", match="does not exist")
    user_error(capsys, "predict", trained, match="name at least one audio file")
    (tmp_path / "nothing").mkdir()
    user_error(capsys, "predict", trained, tmp_path / "nothing", match="no audio files found")


def test_error_exit_code_from_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "m.csv").write_text("path,transcript\na.wav,\n")
    proc = subprocess.run([sys.executable, "-m", "deepskeptic", "train", "speech", "--data", str(tmp_path / "m.csv"),
                           "--model", "mlp", "--epochs", "1", "--no-progress"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: manifest '{tmp_path / 'm.csv'}' row 2 has an empty transcript"]
