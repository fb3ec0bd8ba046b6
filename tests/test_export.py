"""`deepskeptic export`: every network of the registry leaves its run folder as ONNX (and as a
torch.export program) that computes what the run computes, with a sidecar another program can
read; the onnxruntime-only example classifies like `predict`; bad input exits 2 with one line.

Every run here is tiny (one epoch or two, a few dozen examples) and trained once per module."""
from __future__ import annotations

import csv
import io
import json
import random
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import cli, user_error
from conftest import tiny_speech_spec

from deepskeptic.cli import main
from deepskeptic.data.images import load_image_data
from deepskeptic.export import TOLERANCE
from deepskeptic.models import registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "onnx_classify.py"
NETWORKS = [(s.task, s.name) for s in registry.specs() if not s.one_step]
# torch.export as well (seconds per graph): an image network and a recurrent one. torch.export unrolls an
# LSTM and fixes its time axis at the example's length: one step for textgen (the text lstm's 512 steps
# take it ~50 s to trace, too long here)
TORCH_EXPORT = [("image", "cnn"), ("textgen", "lstm")]


# ------------------------------------------------------------------ tiny data and runs

def write_series(path: Path, n: int = 72) -> Path:
    """Monthly sales with trend and season, and a price covariate."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    y = 50 + 0.5 * t + 8 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, n)
    lines = ["month,sales,price"] + [f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{v:.3f},{10 + i % 5}"
                                     for i, v in zip(t, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_shapes(root: Path, names=("square", "disc"), n: int = 16, size: int = 16, rgb: bool = False) -> Path:
    """One folder per class of tiny PNGs: bright squares or discs on noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 40, (size, size)).astype(np.uint8)
            c, r = rng.integers(5, size - 5, 2), rng.integers(3, 5)
            square = (np.abs(yy - c[0]) <= r) & (np.abs(xx - c[1]) <= r)
            img[square if name == "square" else (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r] = 220
            Image.fromarray(np.stack([img, img // 2, img], -1) if rgb else img).save(root / name / f"{i:03d}.png")
    return root


def write_documents(path: Path, n: int = 90) -> Path:
    """A CSV of short documents on three topics."""
    rng = random.Random(0)
    topics = {"sport": "ball goal team match score".split(), "food": "bread cheese apple soup cook".split(),
              "tech": "computer code bug server linux".split()}
    filler = "the a of and to is".split()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            label = rng.choice(sorted(topics))
            words = [rng.choice(topics[label] if rng.random() < 0.5 else filler) for _ in range(rng.randint(3, 12))]
            w.writerow([" ".join(words) + f" {i}", label])
    return path


def write_corpus(path: Path) -> Path:
    rng = random.Random(0)
    words = "the cat sat on a mat and dog ran far away from home".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(60)) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-data")
    out = {"root": root, "series": write_series(root / "sales.csv"),
           "shapes": write_shapes(root / "shapes"), "domains": write_shapes(root / "domains", rgb=True),
           "documents": write_documents(root / "docs.csv"), "corpus": write_corpus(root / "corpus.txt")}
    if shutil.which("espeak-ng"):
        from deepskeptic.data import spoken
        out["speech"] = spoken.synthesise(root / "speech", tiny_speech_spec(), progress=False).parent
    return out


# small networks: the tests check what the graphs compute, not accuracy
SMALL = {("forecast", "lstm"): "hidden = 8\nmembers = 3", ("forecast", "rnn"): "hidden = 8\nmembers = 2",
         ("forecast", "mlp"): "hidden = 8\nmembers = 2", ("text", "lstm"): "hidden = 8\nembed = 8",
         ("speech", "lstm"): "hidden = 8\nlayers = 2", ("speech", "lstm-ctc"): "hidden = 8\nlayers = 2",
         ("speech", "mlp"): "hidden = [16]", ("speech", "mlp-ctc"): "hidden = [16]\ncontext = 2",
         ("speech", "cnn"): "widths = [4, 8, 8]\nhidden = 8"}


def train_args(task: str, model: str, data: dict[str, Path], out: Path) -> list:
    """The fastest settings that make a real run of ``model`` in ``out``."""
    common = ["--model", model, "--epochs", 1, "--no-progress", "--out", out]
    if (task, model) in SMALL:
        config = out.parent / f"{task}-{model}.toml"
        config.write_text(f"[model]\n{SMALL[task, model]}\n")
        common += ["--config", config]
    if task == "image":
        return ["train", "image", "--data", "digits", "--limit", 100, *common]
    if task == "forecast":
        return ["train", "forecast", "--data", data["series"], "--target", "sales", "--horizon", 3, "--origins", 3,
                "--lookback", 12, *common]
    if task == "gan":
        return ["train", "gan", "--data", data["shapes"], "--batch-size", 8, "--epoch-images", 16,
                "--judge-epochs", 1, "--eval-samples", 8, *common]
    if task == "cyclegan":
        return ["train", "cyclegan", "--data-a", data["domains"] / "square", "--data-b", data["domains"] / "disc",
                "--batch-size", 4, "--limit", 4, "--judge-epochs", 1, "--eval-samples", 4, *common]
    if task == "text":
        return ["train", "text", "--data", data["documents"], *common]
    if task == "textgen":
        return ["train", "textgen", "--data", data["corpus"], "--hidden", 16, "--embed", 8, "--layers", 2,
                "--seq-len", 16, "--batch-size", 4, *common]
    if task == "speech":
        if "speech" not in data:
            pytest.skip("espeak-ng is not installed: no spoken data")
        return ["train", "speech", "--data", data["speech"], *(["--bidirectional"] if model == "lstm" else []),
                *common]
    raise AssertionError(f"no tiny run for {task}")


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """run(task, model) -> the folder of a tiny trained run, trained on first use."""
    from deepskeptic.tasks import TASKS
    root, made = tmp_path_factory.mktemp("export-runs"), {}
    cache = pytest.MonkeyPatch()
    cache.setenv("DEEPSKEPTIC_CACHE", str(root / "cache"))   # the gan and cyclegan judges, trained once
    for task in TASKS.values():   # report.html is tested with each task; here it would be 3/4 of the time
        cache.setattr(type(task), "write_report", lambda self, *args, **kwargs: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                  # tiny networks: a second thread only waits

    def run(task: str, model: str) -> Path:
        if (task, model) not in made:
            out = root / f"{task}-{model}"
            assert main([str(a) for a in train_args(task, model, data, out)]) == 0
            made[task, model] = out
        return made[task, model]

    yield run
    torch.set_num_threads(threads)
    cache.undo()


def export(run: Path, out: Path, fmt: str = "onnx") -> dict[str, dict]:
    """`deepskeptic export RUN --format FMT --out OUT`: {graph name: its sidecar}."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        rc = main(["export", str(run), "--format", fmt, "--out", str(out)])
    assert rc == 0, stderr.getvalue()
    sidecars = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sidecars and all((out / s["file"]).is_file() for s in sidecars.values())
    assert all(s["file"] in stdout.getvalue() for s in sidecars.values())
    return sidecars


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """exported(task, model, fmt="onnx") -> (the export folder, {graph: sidecar}), exported once."""
    root, made = tmp_path_factory.mktemp("exports"), {}

    def get(task: str, model: str, fmt: str = "onnx") -> tuple[Path, dict[str, dict]]:
        if (task, model, fmt) not in made:
            out = root / f"{task}-{model}-{fmt}"
            made[task, model, fmt] = out, export(runs(task, model), out, fmt)
        return made[task, model, fmt]
    return get


def session(path: Path):
    import onnxruntime
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def load_run(path: Path):
    from deepskeptic.runs import Run
    from deepskeptic.tasks import get_task
    run = Run.open(path)
    return get_task(run.config["task"]), run


# ------------------------------------------------------------------ parity, every network

@pytest.mark.parametrize("task,model", NETWORKS, ids=[f"{t}-{m}" for t, m in NETWORKS])
def test_every_network_exports_to_onnx_within_tolerance(task, model, exported):
    out, sidecars = exported(task, model)
    for s in sidecars.values():
        assert s["format"] == "onnx" and s["task"] == task and s["model"] == model
        assert s["parity"]["max_rel_diff"] <= TOLERANCE and s["parity"]["checked_with"] == "onnxruntime"
        assert s["parity"]["examples"] >= 3        # a batch and its first example alone, at least
        assert s["inputs"] and s["outputs"] and "batch" in s["inputs"][0]["shape"]
        assert s["description"] and s["input"] and s["output"] and s["versions"]["torch"] == torch.__version__
        assert s["metrics"]["params"] > 0
        # the file runs under the sidecar's names
        onnx = session(out / s["file"])
        assert [i.name for i in onnx.get_inputs()] == [i["name"] for i in s["inputs"]]
        assert [o.name for o in onnx.get_outputs()] == [o["name"] for o in s["outputs"]]


@pytest.mark.parametrize("task,model", TORCH_EXPORT, ids=[f"{t}-{m}" for t, m in TORCH_EXPORT])
def test_torch_export_programs_compute_the_same(task, model, exported):
    out, sidecars = exported(task, model, "torch-export")
    for s in sidecars.values():
        assert s["file"].endswith(".pt2") and s["parity"]["checked_with"] == "torch.export.load"
        assert s["parity"]["max_rel_diff"] <= TOLERANCE and s["inputs"][0]["shape"][0] == "batch"
    if task == "textgen":   # the program is one sampling step
        shapes = {i["name"]: i["shape"] for i in sidecars["step"]["inputs"]}
        assert shapes == {"ids": ["batch", 1], "h": [2, "batch", 16], "c": [2, "batch", 16]}
        _, onnx_sidecars = exported(task, model)
        assert onnx_sidecars["step"]["inputs"][0]["shape"] == ["batch", "time"]
        assert onnx_sidecars["step"]["parity"]["examples"] > sidecars["step"]["parity"]["examples"]


# ------------------------------------------------------------------ what the graphs compute

def test_image_graph_takes_uint8_pixels_and_gives_predicts_probabilities(runs, exported):
    run = runs("image", "cnn")
    out, sidecars = exported("image", "cnn")
    s = sidecars["model"]
    info = json.loads((run / "config.json").read_text())["data_info"]
    assert s["classes"] == [str(i) for i in range(10)] and (s["image_size"], s["channels"]) == (8, 1)
    assert s["mean"] == info["mean"] and s["std"] == info["std"]
    assert "uint8" in s["input"] and "no preprocessing" in s["input"]
    assert [i["dtype"] for i in s["inputs"]] == ["uint8"] and [o["name"] for o in s["outputs"]] == ["logits", "probabilities"]
    assert s["metrics"]["test_accuracy"] == json.loads((run / "metrics.json").read_text())["test_accuracy"]

    task, folder = load_run(run)
    x = load_image_data("digits").x_test[:50].numpy()                     # (50, 1, 8, 8) uint8
    logits, probs = session(out / "model.onnx").run(None, {"pixels": x})
    expected = task.predictor(folder).probabilities(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_forecast_graph_reads_raw_windows_and_forecasts_what_predict_does(runs, exported, data, tmp_path, capsys):
    run = runs("forecast", "lstm")
    out, sidecars = exported("forecast", "lstm")
    s = sidecars["model"]
    assert (s["lookback"], s["horizon"], s["features"]) == (12, 3, ["sales", "price"])
    assert s["inputs"][0]["shape"] == ["batch", 12, 2] and s["inputs"][0]["dtype"] == "float64"
    assert s["anchor"]["season"] >= 1 and 0 < s["anchor"]["smoothing"] <= 1 and s["members"] == 3
    assert len(s["scaling"]["mean"]) == 2
    # the last 12 raw rows of the CSV -> the forecast `deepskeptic predict` prints
    rows = np.loadtxt(data["series"], delimiter=",", skiprows=1, usecols=(1, 2))
    (forecast,) = session(out / "model.onnx").run(None, {"window": rows[None, -12:]})
    rc, printed, _ = cli(capsys, "predict", run, "--json", "--out", tmp_path / "f.csv")
    assert rc == 0
    np.testing.assert_allclose(forecast[0], [r["forecast"] for r in json.loads(printed)], rtol=1e-6)


@pytest.mark.parametrize("model", ["lstm", "logreg"])
def test_text_graphs_classify_like_predict_from_the_sidecars_reading(model, runs, exported, capsys):
    run = runs("text", model)
    out, sidecars = exported("text", model)
    s = sidecars["model"]
    texts = ["the goal of the team", "cheese soup and bread", "a bug in the server code é"]
    if model == "lstm":
        vocab = s["vocabulary"]
        assert vocab["padding_id"] == 0 and vocab["unknown_id"] == 1 and s["max_length"] == 512
        ids = [[vocab["ids"].get(c, vocab["unknown_id"]) for c in t[:s["max_length"]]] for t in texts]
        feed = {"ids": np.array([i + [0] * (max(map(len, ids)) - len(i)) for i in ids], dtype=np.int64),
                "lengths": np.array([len(i) for i in ids], dtype=np.int64)}
    else:
        from sklearn.feature_extraction.text import CountVectorizer
        counter = CountVectorizer(vocabulary=s["ngram_vocabulary"], ngram_range=tuple(s["ngram_range"]),
                                  lowercase=s["lowercase"], token_pattern=s["token_pattern"])
        feed = {"counts": counter.transform(texts).toarray().astype(np.float32)}
    logits, probs = session(out / "model.onnx").run(None, feed)
    rc, printed, _ = cli(capsys, "predict", run, *texts, "--json", "--top-k", "1")
    assert rc == 0
    for p, result in zip(probs, json.loads(printed)):
        assert s["classes"][int(p.argmax())] == result["top"][0]["class"]
        assert abs(float(p.max()) - result["top"][0]["probability"]) <= 2e-5


@pytest.mark.parametrize("model", ["lstm", "rnn"])
def test_textgen_step_samples_what_generate_does(model, runs, exported, capsys):
    """Greedy decoding with the sidecar's recipe, one ONNX step at a time, writes `generate`'s text."""
    run = runs("textgen", model)
    out, sidecars = exported("textgen", model)
    s = sidecars["step"]
    vocab, states = s["vocabulary"], list(s["state"])
    assert states == (["h", "c"] if model == "lstm" else ["h"]) and s["state"]["h"]["shape"] == [2, "batch", 16]
    assert "temperature" in s["sampling"]
    step = session(out / "step.onnx")
    feed = {"ids": np.array([[vocab["ids"]["\n"]]], dtype=np.int64),
            **{n: np.zeros((2, 1, 16), dtype=np.float32) for n in states}}
    text = ""
    for _ in range(30):
        logits, *new = step.run(None, feed)
        last = logits[0, -1]
        last[vocab["unknown_id"]] = -np.inf
        nxt = int(last.argmax())
        text += vocab["itos"][nxt]
        feed = {"ids": np.array([[nxt]], dtype=np.int64), **dict(zip(states, new))}
    rc, printed, _ = cli(capsys, "generate", run, "--length", 30, "--temperature", 0, "--json")
    assert rc == 0 and json.loads(printed)["samples"] == [text]


@pytest.mark.parametrize("model", ["lstm", "lstm-ctc", "cnn", "mlp-ctc"])
def test_speech_graphs_compute_what_the_run_does_on_its_features(model, runs, exported):
    """The bidirectional LSTMs run unpacked in the graph: the numbers are the packed LSTM's."""
    run = runs("speech", model)
    out, sidecars = exported("speech", model)
    s = sidecars["model"]
    f = s["features"]
    assert (s["sample_rate"], f["n_fft"], f["hop"], f["n_mels"]) == (16000, 400, 160, 40)
    assert np.asarray(f["mel_filterbank"]).shape == (40, 201) and len(f["steps"]) >= 5
    assert (s["labels"] == ["one", "two", "zero"]) if model in ("lstm", "cnn") else \
        (s["ctc"]["blank"] == 0 and s["ctc"]["symbols"][0] == "<blank>" and len(s["ctc"]["symbols"]) == 29)

    from deepskeptic.data.audio import load_audio, log_mel
    from deepskeptic.tasks.speech.eval import outputs
    task, folder = load_run(run)
    files = sorted((data_root(run) / "audio").rglob("*.flac"))[:5]
    feats = [log_mel(load_audio(p)) for p in files]                    # what predict computes from a file
    lengths = np.array([len(x) for x in feats], dtype=np.int64)
    batch = np.zeros((len(feats), lengths.max(), 40), dtype=np.float32)
    for i, x in enumerate(feats):
        batch[i, :len(x)] = x.numpy()
    got = session(out / "model.onnx").run(None, {"features": batch, "lengths": lengths})
    expected = outputs(task.predictor(folder).model, feats, torch.device("cpu"))   # per utterance, sorted by length
    for i, e in enumerate(expected):
        table = got[0][i] if model in ("lstm", "cnn") else got[0][i, :int(got[1][i])]
        np.testing.assert_allclose(table, e.numpy(), atol=1e-4, rtol=1e-4)


def data_root(run: Path) -> Path:
    return Path(json.loads((run / "config.json").read_text())["settings"]["data"])


def test_gan_generator_graph_maps_normal_noise_to_unit_images(runs, exported):
    run = runs("gan", "dcgan")
    out, sidecars = exported("gan", "dcgan")
    s = sidecars["generator"]
    assert s["latent_dim"] == 100 and (s["image_size"], s["channels"]) == (16, 1)
    assert "standard normal" in s["input"] and "255" in s["output"]
    z = np.random.default_rng(1).standard_normal((5, 100)).astype(np.float32)
    (images,) = session(out / "generator.onnx").run(None, {"z": z})
    assert images.shape == (5, 1, 16, 16) and images.min() >= 0 and images.max() <= 1

    from deepskeptic.tasks.common.adversarial import to_uint8
    task, folder = load_run(run)
    generator = task.load_models(folder, torch.device("cpu"))["generator"]
    with torch.no_grad():
        pixels = to_uint8(generator(torch.from_numpy(z))).numpy().astype(int)
    assert np.abs(np.round(images * 255).astype(int) - pixels).max() <= 1   # a .5 may round either way


def test_cyclegan_exports_both_generators_from_pixels(runs, exported, data):
    run = runs("cyclegan", "cyclegan")
    out, sidecars = exported("cyclegan", "cyclegan")
    assert set(sidecars) == {"g_ab", "g_ba"}
    assert sidecars["g_ab"]["direction"] == "square -> disc" and sidecars["g_ba"]["direction"] == "disc -> square"
    files = sorted((data["domains"] / "disc").glob("*.png"))[:3]
    x = np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in files])   # (3, 3, 16, 16) uint8
    (images,) = session(out / "g_ba.onnx").run(None, {"pixels": x})
    assert images.shape == (3, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    task, folder = load_run(run)
    translated = task.predictor(folder).translate(x, "b2a")             # (3, C, S, S) uint8
    assert np.abs(np.round(images * 255).astype(int) - translated.astype(int)).max() <= 1


# ------------------------------------------------------------------ the onnxruntime-only example

def test_the_onnxruntime_only_example_classifies_like_predict(runs, exported, tmp_path, capsys):
    run = runs("image", "cnn")
    out, _ = exported("image", "cnn")
    digits = load_image_data("digits")
    files = []
    for i in range(6):                                      # 32 px files: both resize them to 8 px
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray(digits.x_test[i, 0].numpy()).resize((32, 32)).save(files[-1])
    files.append(tmp_path / "rgba.png")                     # colour with an alpha channel
    grey = digits.x_test[6, 0].numpy()
    Image.fromarray(np.stack([grey] * 3 + [np.full((8, 8), 255, np.uint8)], -1), "RGBA").save(files[-1])
    done = subprocess.run([sys.executable, str(EXAMPLE), str(out / "model.onnx"), *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in done.stdout.splitlines()]
    rc, printed, _ = cli(capsys, "predict", run, *files, "--json", "--top-k", "3")
    assert rc == 0
    expected = json.loads(printed)
    assert [g["top"][0]["class"] for g in got] == [e["top"][0]["class"] for e in expected]
    for g, e in zip(got, expected):
        assert abs(g["top"][0]["probability"] - e["top"][0]["probability"]) <= 1e-4
    imports = [line for line in EXAMPLE.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert imports and not any("deepskeptic" in line for line in imports)


# ------------------------------------------------------------------ bad input: exit 2, one line

def test_a_baseline_fitted_in_one_step_is_not_a_graph(data, tmp_path, capsys):
    out = tmp_path / "naive"
    assert main([str(a) for a in train_args("forecast", "naive", data, out)]) == 0
    user_error(capsys, "export", out, match="fitted in one step.*no graph to export.*predict")
    assert not (out / "export").exists()


def test_an_incomplete_run_an_unknown_format_and_an_unwritable_out(runs, tmp_path, capsys):
    run = runs("image", "cnn")
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    (cut / "metrics.json").unlink()
    user_error(capsys, "export", cut, match="did not finish training.*--resume")
    user_error(capsys, "export", run, "--format", "tflite", match="export format.*onnx.*torch-export")
    (tmp_path / "a-file").write_text("")
    user_error(capsys, "export", run, "--out", tmp_path / "a-file" / "sub", match="cannot write the export.*--out")
    user_error(capsys, "export", tmp_path / "nowhere", match="does not exist")


def test_a_file_that_differs_from_pytorch_or_does_not_run_is_not_kept(runs, tmp_path, capsys, monkeypatch):
    """Beyond tolerance, or when the written file refuses inputs the model takes: exit 2, one line,
    no file left behind that a user could mistake for a checked export."""
    import deepskeptic.export as export_module
    run = runs("image", "cnn")
    write, open_file = export_module.WRITERS["onnx"]

    def off_by_a_little(path, graph):
        run_file = open_file(path, graph)
        return lambda inputs: [o + 1e-2 * np.abs(o).max() for o in run_file(inputs)]

    monkeypatch.setitem(export_module.WRITERS, "onnx", (write, off_by_a_little))
    user_error(capsys, "export", run, "--out", tmp_path / "a", match=r"differs from PyTorch by 0\.01.*not kept.*--format torch-export")
    assert not list((tmp_path / "a").glob("model.*"))

    def refuses_one_example(path, graph):
        run_file = open_file(path, graph)

        def run_it(inputs):
            if inputs[0].shape[0] == 1:
                raise RuntimeError("Guard failed: batch != 1")
            return run_file(inputs)
        return run_it

    monkeypatch.setitem(export_module.WRITERS, "onnx", (write, refuses_one_example))
    user_error(capsys, "export", run, "--out", tmp_path / "b", match=r"does not run on one example alone.*Guard failed.*--format")
    assert not list((tmp_path / "b").glob("model.*"))
