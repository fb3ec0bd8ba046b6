"""The image task through the command line: train on digits to a real accuracy, the run folder,
predict / evaluate / explain / report, compare, resume after Ctrl-C and kill -9, and every bad
input -> exit code 2 with one line on stderr and no run that looks complete."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from deepskeptic.checkpoint import load_state
from deepskeptic.cli import main
from deepskeptic.data.images import load_image_data
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.tasks import get_task
from deepskeptic.tasks.common.pixels import normalise
from deepskeptic.tasks.image.report import grad_cam
from cli_helpers import cli, user_error
from conftest import TIME_FIELDS

SRC = Path(__file__).resolve().parents[1] / "src"
pytestmark = pytest.mark.usefixtures("in_tmp")  # default run folders (runs/...) land in the test's folder
METRIC_KEYS = {"test_accuracy", "test_top5_accuracy", "train_seconds", "params", "flops_per_example",
               "device", "seed", "epochs"}


def no_complete_runs(root: Path) -> None:
    assert not list(root.rglob("metrics.json")), list(root.rglob("metrics.json"))


def _write_digit_pngs(folder: Path, n: int = 4) -> list[int]:
    """The first ``n`` digits test images as 8x8 PNG files; returns their labels."""
    data = load_image_data("digits")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(data.x_test[i, 0].numpy()).save(folder / f"digit{i}.png")
    return data.y_test[:n].tolist()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """cnn on digits, 3 epochs: the run the use commands and several bad inputs work on."""
    out = tmp_path_factory.mktemp("trained") / "cnn-digits"
    assert main(["train", "image", "--data", "digits", "--model", "cnn", "--epochs", "3",
                 "--out", str(out), "--no-progress"]) == 0
    return out


# ------------------------------------------------------------------ train and the run folder

def test_cnn_on_digits_reaches_real_accuracy(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    # seeds 0-2 reach 0.98 after 3 epochs (0.93 with random shifts); chance is 0.1
    assert metrics["test_accuracy"] >= 0.9
    assert metrics["test_top5_accuracy"] >= metrics["test_accuracy"]


def test_run_folder_contents(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["task"] == "image" and config["device"] == "cpu"
    s = config["settings"]
    assert (s["data"], s["model"], s["epochs"], s["seed"], s["time_budget"]) == ("digits", "cnn", 3, 0, None)
    assert s["lr"] == registry.spec("image", "cnn").train_defaults["lr"]  # the model's defaults, resolved
    assert {"torch", "numpy", "python", "deepskeptic"} <= set(config["versions"])
    assert config["versions"]["torch"] == torch.__version__
    assert config["model_config"]["image_size"] == 8 and config["model_config"]["num_classes"] == 10
    assert config["data_info"]["classes"] == [str(i) for i in range(10)]

    history = [json.loads(line) for line in (trained / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for h in history:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds", "train_seconds"} <= set(h)
    assert history[-1]["train_loss"] < history[0]["train_loss"]

    metrics = json.loads((trained / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert (metrics["seed"], metrics["epochs"]) == (0, 3) and metrics["device"].startswith("cpu")
    assert metrics["train_seconds"] == pytest.approx(history[-1]["train_seconds"], abs=1e-3)
    assert isinstance(metrics["flops_per_example"], int) and metrics["flops_per_example"] > 0

    weights = load_file(trained / "model.safetensors")
    model = registry.create("image", "cnn", **{k: v for k, v in config["model_config"].items()})
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items()})  # strict: all there, none extra
    assert metrics["params"] == registry.count_params(model)
    state = load_state(trained / "checkpoint" / "state.safetensors")
    assert state["position"]["done"] is True and state["position"]["epoch"] == 3

    html = (trained / "report.html").read_text()
    assert_self_contained(html)
    for section in ("Learning curves", "Confusion matrix", "Feature maps"):
        assert section in html


def assert_self_contained(html: str) -> None:
    assert "data:image/png;base64," in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert all(src.startswith("data:") for src in re.findall(r"""<img[^>]*\ssrc=["']([^"']*)""", html))
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_train_prints_result_and_default_run_folder(tmp_path, capsys):
    rc, out, err = cli(capsys, "train", "image", "--data", "digits", "--model", "logreg", "--epochs", "1",
                       "--limit", "200", "--no-progress")
    assert rc == 0, err
    assert re.search(r"test_accuracy 0\.\d{4} after 1 epoch\(s\)", out)
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("image-digits-logreg-")
    assert f"run folder: runs/{runs[0].name}" in out or str(runs[0]) in out
    assert json.loads((runs[0] / "config.json").read_text())["data_info"]["train"] == 200


# ------------------------------------------------------------------ using a run

def test_predict_text_and_json(trained, tmp_path, capsys):
    labels = _write_digit_pngs(tmp_path / "pngs")
    rc, out, err = cli(capsys, "predict", trained, tmp_path / "pngs" / "digit0.png", tmp_path / "pngs" / "digit1.png")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(tmp_path / "pngs" / "digit0.png") + ": ")
    assert len(re.findall(r"\d [01]\.\d{3}", lines[0])) == 3  # top 3 by default: class and probability

    rc, out, err = cli(capsys, "predict", trained, tmp_path / "pngs", "--json", "--top-k", "2")
    assert rc == 0, err
    results = json.loads(out)
    assert [Path(r["file"]).name for r in results] == [f"digit{i}.png" for i in range(4)]
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
    correct = sum(r["top"][0]["class"] == str(y) for r, y in zip(results, labels))
    assert correct >= 3


def test_evaluate_recomputes_the_test_metrics(trained, capsys):
    rc, out, err = cli(capsys, "evaluate", trained)
    assert rc == 0, err
    result = json.loads(out)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert result["test_images"] == 360
    assert result["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert result["confusion_matrix"] == metrics["confusion_matrix"]


def test_explain_writes_feature_maps_and_grad_cam(trained, tmp_path, capsys):
    _write_digit_pngs(tmp_path / "pngs", n=1)
    rc, out, err = cli(capsys, "explain", trained, tmp_path / "pngs" / "digit0.png", "--out", tmp_path / "explain")
    assert rc == 0, err
    written = sorted(p.name for p in (tmp_path / "explain").iterdir())
    assert written == ["digit0-feature-maps.png", "digit0-gradcam.png"]
    for name in written:
        with Image.open(tmp_path / "explain" / name) as im:
            assert im.format == "PNG" and min(im.size) > 50
    assert "predicted" in out


def test_grad_cam_heat_map_follows_the_image_and_the_class(trained):
    """Grad-CAM of the trained cnn on real test digits: each map spreads over [0, 1] (a constant map
    would not), differs between digits of different classes, and changes with the class explained."""
    predictor = get_task("image").predictor(Run.open(trained))
    data = load_image_data("digits")
    cams, spreads = [], []
    for i in range(12):
        image = data.x_test[i:i + 1]                                   # (1, 1, 8, 8) uint8
        x = normalise(image, predictor.mean, predictor.std)
        cam, target = grad_cam(predictor.model, x)
        assert cam.shape == (8, 8) and 0 <= cam.min() and cam.max() == pytest.approx(1.0)
        assert target == int(predictor.logits(image).argmax())        # the predicted class by default
        spreads.append(cam.max() - cam.min())
        runner_up = int(predictor.logits(image)[0].argsort()[-2])
        other, _ = grad_cam(predictor.model, x, target=runner_up)
        assert np.abs(cam - other).max() > 0.05                      # another class, another map
        cams.append(cam)
    assert min(spreads) > 0.05 and np.median(spreads) > 0.3
    labels = data.y_test[:12].tolist()
    gaps = [np.abs(cams[i] - cams[j]).max() for i in range(12) for j in range(i + 1, 12) if labels[i] != labels[j]]
    assert min(gaps) > 0.02 and np.median(gaps) > 0.2


def test_predictor_on_decoded_images_equals_predict_json(trained, tmp_path, capsys):
    """The Python predictor on arrays and PIL images gives what `predict --json` prints for the same
    images saved as files, whatever their size and mode."""
    _write_digit_pngs(tmp_path / "pngs", n=3)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 13, 3), dtype=np.uint8)).save(tmp_path / "pngs" / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (11, 11, 4), dtype=np.uint8)).save(tmp_path / "pngs" / "rgba.png")
    rc, out, err = cli(capsys, "predict", trained, tmp_path / "pngs", "--json", "--top-k", "4")
    assert rc == 0, err
    expected = json.loads(out)
    paths = [r["file"] for r in expected]
    assert [Path(p).name for p in paths] == ["digit0.png", "digit1.png", "digit2.png", "rgb.png", "rgba.png"]

    predictor = get_task("image").predictor(Run.open(trained))
    arrays = [np.asarray(Image.open(p)) for p in paths]               # (8, 8), (20, 13, 3), (11, 11, 4)
    assert predictor.predict(arrays, names=paths, top_k=4) == expected
    assert predictor.predict([Image.open(p) for p in paths], names=paths, top_k=4) == expected
    x, names = predictor.read(paths)
    assert x.dtype == torch.uint8 and x.shape == (5, 1, 8, 8) and names == paths
    assert predictor.predict(x, names=names, top_k=4) == expected
    digits = predictor.predict(np.stack(arrays[:3]))                   # (3, 8, 8): one array, unnamed
    assert [r["file"] for r in digits] == ["0", "1", "2"]
    assert [r["top"] for r in digits] == [r["top"][:3] for r in expected[:3]]
    with pytest.raises(UserError, match="2 names for 5 images"):
        predictor.predict(x, names=paths[:2])


def test_report_is_rendered_again(trained, capsys):
    copy = trained.parent / "report-copy"
    shutil.copytree(trained, copy)
    (copy / "report.html").unlink()
    rc, out, err = cli(capsys, "report", copy)
    assert rc == 0, err
    assert_self_contained((copy / "report.html").read_text())


def test_models_and_datasets_listings(capsys):
    rc, out, err = cli(capsys, "models", "image")
    assert rc == 0, err
    for name in registry.names("image"):
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert re.search(r"\d[\d,]* params", line), line
    rc, out, err = cli(capsys, "models", "image", "--data", "digits")
    assert rc == 0 and "8x8x1 images, 10 classes" in out
    rc, out, err = cli(capsys, "datasets")
    assert rc == 0, err
    digits = out[out.index("digits"):]
    assert "available at" in digits.splitlines()[1]
    assert "fashion-mnist" in out and "any folder" in out


# ------------------------------------------------------------------ compare

def test_compare_end_to_end_and_reuse(tmp_path, capsys):
    out_dir = tmp_path / "cmp"

    def compare_args(epochs=2):
        return ["compare", "image", "--data", "digits", "--models", "logreg,cnn", "--seeds", "2", "--epochs", epochs,
                "--limit", "300", "--out", out_dir, "--no-progress"]

    args = compare_args()
    rc, out, err = cli(capsys, *args)
    assert rc == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["task"] == "image" and summary["metric"] == "test_accuracy" and summary["seeds"] == 2
    assert list(summary["models"]) == ["logreg", "cnn"]
    for model, s in summary["models"].items():
        values = s["test_accuracy_values"]
        assert len(values) == 2 and s["test_accuracy_mean"] == pytest.approx(np.mean(values))
        assert s["test_accuracy_std"] == pytest.approx(np.std(values, ddof=1))
        assert s["params"] > 0 and s["flops_per_example"] > 0 and s["train_seconds_mean"] > 0
        assert [Path(r).name for r in s["runs"]] == [f"{model}-seed0", f"{model}-seed1"]
        for seed, r in enumerate(s["runs"]):
            m = json.loads((Path(r) / "metrics.json").read_text())
            assert m["seed"] == seed and m["epochs"] == 2 and m["test_accuracy"] == values[seed]
    assert summary["models"]["cnn"]["role"] == "deep" and summary["models"]["logreg"]["role"] == "baseline"
    verdict = next(v for v in summary["verdicts"] if v.startswith("cnn "))
    assert re.search(r"(beats|loses to|is within the seed spread of) logreg", verdict)
    assert verdict in out
    html = (out_dir / "report.html").read_text()
    assert_self_contained(html)
    assert "Verdict" in html and "logreg" in html

    # the same comparison again reuses every complete run and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in out_dir.rglob("metrics.json")}
    rc, out2, err = cli(capsys, *args)
    assert rc == 0, err
    assert "==" not in out2 and {p: p.stat().st_mtime_ns for p in out_dir.rglob("metrics.json")} == stamps
    assert json.loads((out_dir / "summary.json").read_text())["models"] == summary["models"]

    # a different budget into the same folder is refused, not silently mixed with the old runs
    user_error(capsys, *compare_args(epochs=3), match="other settings.*epochs 2 there, 3 now")
    # an unfinished run in the folder is resumed (the checkpoint of a finished run: nothing to train)
    (out_dir / "logreg-seed1" / "metrics.json").unlink()
    rc, out3, err = cli(capsys, *args)
    assert rc == 0, err
    assert "== logreg, seed 1" in out3 and out3.count("==") == 1
    assert json.loads((out_dir / "logreg-seed1" / "metrics.json").read_text())["test_accuracy"] == \
        summary["models"]["logreg"]["test_accuracy_values"][1]

    (out_dir / "report.html").unlink()
    rc, out, err = cli(capsys, "report", out_dir)
    assert rc == 0 and (out_dir / "report.html").is_file()
    # explain needs convolutions: a logreg run says so
    _write_digit_pngs(tmp_path / "pngs", n=1)
    user_error(capsys, "explain", out_dir / "logreg-seed0", tmp_path / "pngs" / "digit0.png",
               match="no convolutional layers")


# ------------------------------------------------------------------ resume

def _resume_args(out: Path, config: Path) -> list[str]:
    return ["train", "image", "--data", "digits", "--model", "mlp", "--epochs", "12", "--seed", "1",
            "--config", str(config), "--out", str(out), "--no-progress"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    config = root / "mlp.toml"
    config.write_text('weight_decay = 0.001\n[model]\nhidden = [128, 64]\ndropout = 0.3\n')
    out = root / "uninterrupted"
    assert main(_resume_args(out, config)) == 0
    return out, config


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "deepskeptic", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(proc: subprocess.Popen, history: Path, n: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if history.is_file() and len(history.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be stopped: {proc.communicate()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no epoch finished in time")


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs of the same settings ended identically, time fields aside."""
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert set(ma) == set(mb)
    assert {k: v for k, v in ma.items() if k not in TIME_FIELDS} == {k: v for k, v in mb.items() if k not in TIME_FIELDS}
    ha, hb = ([{k: v for k, v in json.loads(line).items() if k not in TIME_FIELDS}
               for line in (r / "history.jsonl").read_text().splitlines()] for r in (a, b))
    assert ha == hb
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_after_ctrl_c_equals_uninterrupted(uninterrupted, tmp_path, capsys):
    reference, config = uninterrupted
    out = tmp_path / "interrupted"
    proc = _start(_resume_args(out, config), tmp_path)
    _wait_for_epochs(proc, out / "history.jsonl")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert f"--resume {out}" in stderr and "Traceback" not in stderr
    assert not (out / "metrics.json").exists()
    position = load_state(out / "checkpoint" / "state.safetensors")["position"]
    assert 1 <= position["epoch"] < 12 and not position["done"]

    user_error(capsys, "predict", out, tmp_path, match="did not finish training.*--resume")
    user_error(capsys, "evaluate", out, match="did not finish training")
    rc, stdout, err = cli(capsys, "train", "--resume", out)
    assert rc == 0, err
    assert_same_run(reference, out)


def test_resume_after_kill_9_equals_uninterrupted(uninterrupted, tmp_path, capsys):
    reference, config = uninterrupted
    out = tmp_path / "killed"
    proc = _start(_resume_args(out, config), tmp_path)
    _wait_for_epochs(proc, out / "history.jsonl")
    time.sleep(0.05)  # into the next epoch
    proc.kill()       # SIGKILL: no handler runs, no checkpoint is written
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    # a kill during a checkpoint write leaves a torn temporary file; it must not matter
    (out / "checkpoint" / ".state.safetensors.k1ll3d.tmp").write_bytes(b"\x00" * 100)
    rc, stdout, err = cli(capsys, "train", "--resume", out)
    assert rc == 0, err
    assert_same_run(reference, out)


# ------------------------------------------------------------------ bad input

def _png_folder(root: Path, size: int, classes=("a", "b"), n: int = 5) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    paths = {"root": root}
    (root / "empty").mkdir()
    paths["empty"] = root / "empty"
    paths["no_images"] = _png_folder(root / "no_images", 8)
    (root / "no_images" / "c").mkdir()
    (root / "no_images" / "c" / "notes.txt").write_text("not an image")
    paths["corrupt"] = _png_folder(root / "corrupt", 8, n=10)
    (root / "corrupt" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # 1 of 21: 5 %
    paths["tiny"] = _png_folder(root / "tiny", 4)
    paths["unknown_key"] = root / "unknown_key.toml"
    paths["unknown_key"].write_text("epoch = 3\n")
    paths["unknown_model_key"] = root / "unknown_model_key.toml"
    paths["unknown_model_key"].write_text("[model]\nwidht = 3\n")
    paths["wrong_kind_model_key"] = root / "wrong_kind_model_key.toml"
    paths["wrong_kind_model_key"].write_text("[model]\ndropout = \"some\"\n")
    paths["not_toml"] = root / "not_toml.toml"
    paths["not_toml"].write_text("epochs = = 3\n")
    paths["not_a_run"] = root / "not_a_run"
    paths["not_a_run"].mkdir()
    return paths


TRAIN = ["train", "image", "--model", "cnn", "--no-progress"]
BAD_TRAIN = {
    "unknown data set": (["--data", "digitz"], r"unknown data set 'digitz': did you mean 'digits'"),
    "unknown model": (["--data", "digits", "--model", "cnnn"], r"unknown model .*'cnnn': did you mean 'cnn'"),
    "missing folder": (["--data", "{root}/no/such/folder"], r"does not exist"),
    "empty folder": (["--data", "{empty}"], r"is empty"),
    "class folder without images": (["--data", "{no_images}"], r"class folder .*c' has no images"),
    "corrupt images above 1%": (["--data", "{corrupt}"], r"1 of 21 image files .* unreadable .*broken\.png"),
    "images too small": (["--data", "{tiny}"], r"images of 4 px do not fit model 'cnn'"),
    "zero epochs": (["--data", "digits", "--epochs", "0"], r"epochs must be a positive whole number"),
    "negative epochs": (["--data", "digits", "--epochs", "-2"], r"epochs must be a positive whole number"),
    "fractional epochs": (["--data", "digits", "--epochs", "2.5"], r"invalid int value"),
    "zero budget": (["--data", "digits", "--time-budget", "0"], r"time-budget must be a positive number"),
    "negative budget": (["--data", "digits", "--time-budget", "-1"], r"time-budget must be a positive number"),
    "epochs and budget": (["--data", "digits", "--epochs", "2", "--time-budget", "5"], r"either epochs or a time budget"),
    "config unknown key": (["--data", "digits", "--config", "{unknown_key}"], r"unknown key\(s\) in .*: epoch;"),
    "config [model] unknown key": (["--data", "digits", "--config", "{unknown_model_key}"],
                                   r"unknown setting\(s\) widht for model 'cnn'"),
    "config [model] wrong kind": (["--data", "digits", "--config", "{wrong_kind_model_key}"],
                                  r"model setting dropout of 'cnn' must be a number, got 'some'"),
    "config not TOML": (["--data", "digits", "--config", "{not_toml}"], r"not valid TOML"),
    "config missing": (["--data", "digits", "--config", "{root}/nope.toml"], r"config file .* does not exist"),
    "no data": ([], r"no data given"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_bad_training_input(case, bad, tmp_path, capsys):
    extra, match = BAD_TRAIN[case]
    args = [a.format(**bad) for a in extra]
    user_error(capsys, *TRAIN, *args, "--out", tmp_path / "run", match=match)
    no_complete_runs(tmp_path)
    no_complete_runs(bad["root"])


def test_corrupt_images_below_one_percent_are_skipped_with_a_warning(tmp_path, capsys):
    data = _png_folder(tmp_path / "data", 8, n=60)
    (data / "b" / "broken.png").write_bytes(b"not a png")  # 1 of 121: under 1 %
    rc, out, err = cli(capsys, "train", "image", "--data", data, "--model", "logreg", "--epochs", "1",
                       "--out", tmp_path / "run", "--no-progress")
    assert rc == 0, err
    assert re.search(r"warning: skipped 1 unreadable image\(s\): b/broken\.png", err)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_info"]["skipped"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_cuda(tmp_path, capsys):
    user_error(capsys, *TRAIN, "--data", "digits", "--device", "cuda", "--out", tmp_path / "run",
               match=r"no usable CUDA GPU; use --device cpu")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["evaluate"], ["predict"], ["explain"], ["report"], ["train", "--resume"]])
def test_missing_run_folder(command, tmp_path, capsys):
    user_error(capsys, *command, tmp_path / "no-such-run", match=r"run folder .*no-such-run does not exist")


def test_folder_that_is_not_a_run(bad, capsys):
    user_error(capsys, "evaluate", bad["not_a_run"], match="not a deepskeptic run folder")
    user_error(capsys, "train", "--resume", bad["not_a_run"], match="not a deepskeptic run folder")


def test_run_of_another_task(trained, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "task": "no-such-task"}))
    for command in (["evaluate"], ["predict"], ["report"]):
        user_error(capsys, *command, other, match=r"unknown task 'no-such-task'")
    (other / "metrics.json").unlink()
    user_error(capsys, "train", "--resume", other, match=r"unknown task 'no-such-task'")
    # a comparison folder never reuses a run of another task as one of its own
    cmp = tmp_path / "cmp"
    shutil.copytree(trained, cmp / "cnn-seed0")
    (cmp / "cnn-seed0" / "config.json").write_text(json.dumps({**config, "task": "textgen"}))
    user_error(capsys, "compare", "image", "--data", "digits", "--models", "cnn", "--seeds", "1", "--epochs", "3",
               "--out", cmp, "--no-progress", match=r"is a run of task 'textgen', not 'image'")
    assert not (cmp / "summary.json").exists()


def test_resume_of_a_complete_run(trained, capsys):
    user_error(capsys, "train", "--resume", trained, match="already complete")
    user_error(capsys, "train", "--resume", trained, "image", match="--resume takes only the run folder")


def test_use_commands_on_an_incomplete_run(trained, tmp_path, capsys):
    run = tmp_path / "incomplete"
    shutil.copytree(trained, run)
    (run / "metrics.json").unlink()
    _write_digit_pngs(tmp_path / "pngs", n=1)
    png = tmp_path / "pngs" / "digit0.png"
    for command in (["evaluate", run], ["predict", run, png], ["explain", run, png], ["report", run]):
        user_error(capsys, *command, match=rf"did not finish training; continue it with .*--resume {run}")


def test_bad_use_inputs(trained, tmp_path, capsys):
    user_error(capsys, "predict", trained, match="name at least one image")
    user_error(capsys, "predict", trained, tmp_path / "nope.png", match="does not exist")
    (tmp_path / "broken.png").write_bytes(b"garbage")
    user_error(capsys, "predict", trained, tmp_path / "broken.png", match=r"cannot read image .*broken\.png")
    user_error(capsys, "predict", trained, tmp_path / "broken.png", "--top-k", "0", match="--top-k must be at least 1")
    user_error(capsys, "train", "image", "--data", "digits", "--model", "cnn", "--out", trained,
               match="already exists and is not empty")
    user_error(capsys, "compare", "image", "--data", "digits", "--models", "logreg,cnnn", "--out", tmp_path / "c",
               match="did you mean 'cnn'")
    user_error(capsys, "compare", "image", "--data", "digits", "--seeds", "0", "--out", tmp_path / "c",
               match="--seeds must be at least 1")
    user_error(capsys, "train", "imag", match="invalid choice")
    no_complete_runs(tmp_path)


def test_non_finite_loss_exits_2_without_a_complete_run(tmp_path, capsys, monkeypatch):
    from deepskeptic.tasks.image.jobs import ImageJob
    real_step = ImageJob.train_step

    def diverging_step(self, index, ctx):
        count, stats = real_step(self, index, ctx)
        return count, {**stats, "loss": stats["loss"] * float("inf")}

    monkeypatch.setattr(ImageJob, "train_step", diverging_step)
    user_error(capsys, *TRAIN, "--data", "digits", "--out", tmp_path / "run",
               match=r"training diverged: the loss became (inf|nan) at epoch 1, step 1; lower the learning rate")
    no_complete_runs(tmp_path)


def test_bad_input_in_a_real_process_is_one_line_without_traceback(tmp_path):
    proc = _start(["train", "image", "--data", "digits", "--model", "alexnett"], tmp_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: unknown model") and "did you mean 'alexnet'" in stderr
    assert not (tmp_path / "runs").exists()
