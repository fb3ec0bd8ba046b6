"""Behaviour tests for the `cyclegan` task: networks, the image pool, CLI, compare, translate, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import assert_ctrl_c_resume_is_exact, cli
from conftest import TIME_FIELDS

from deepskeptic.checkpoint import load_state
from deepskeptic.cli import main
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.gan import resolve_cyclegan_config
from deepskeptic.runs import Run
from deepskeptic.tasks import get_task
from deepskeptic.tasks.common import adversarial
from deepskeptic.tasks.common.adversarial import ImagePool
from deepskeptic.tasks.cyclegan.jobs import CycleJob, random_crop


@pytest.fixture(autouse=True)
def _cache_and_threads(tmp_path_factory, monkeypatch, one_thread):
    """One judge cache for the session; one thread (16-px images: more threads only add waiting)."""
    monkeypatch.setenv("DEEPSKEPTIC_CACHE", str(tmp_path_factory.getbasetemp() / "judge-cache"))


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[Path, Path]:
    """Domain A: 20-px RGB squares; domain B: 16-px grayscale discs and one RGBA disc (mixed modes)."""
    root = tmp_path_factory.mktemp("domains")
    rng = np.random.default_rng(0)
    for name, size in (("squares", 20), ("discs", 16)):
        (root / name).mkdir()
        yy, xx = np.mgrid[:size, :size]
        for i in range(24):
            c, r = rng.integers(6, size - 6, 2), rng.integers(3, 5)
            mask = ((np.abs(yy - c[0]) <= r) & (np.abs(xx - c[1]) <= r)) if name == "squares" else \
                ((yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r)
            img = rng.integers(0, 40, (size, size)).astype(np.uint8)
            img[mask] = 230
            if name == "squares":
                Image.fromarray(np.stack([img, img // 2, img], -1), "RGB").save(root / name / f"{i:03d}.png")
            elif i == 0:
                Image.fromarray(np.stack([img] * 3 + [np.full_like(img, 255)], -1), "RGBA").save(root / name / "a.png")
            else:
                Image.fromarray(img, "L").save(root / name / f"{i:03d}.png")
    return root / "squares", root / "discs"


def args(domains, out: Path, *extra: str) -> list[str]:
    return ["train", "cyclegan", "--data-a", str(domains[0]), "--data-b", str(domains[1]), "--model", "cyclegan",
            "--epochs", "1", "--batch-size", "4", "--judge-epochs", "1", "--eval-samples", "8", "--out", str(out),
            "--no-progress", *extra]


# ------------------------------------------------------------------ networks

@pytest.mark.parametrize("size", [8, 16, 28, 32, 64])
def test_generators_keep_the_size_and_discriminators_score_patches(size):
    for channels in (1, 3):
        model = registry.create("cyclegan", "cyclegan", channels=channels, image_size=size, width=4, blocks=1)
        x = torch.rand(2, channels, size, size) * 2 - 1
        for g in (model.g_ab, model.g_ba):
            y = g(x)
            assert y.shape == x.shape and y.abs().max() <= 1
        score = model.d_a(x)
        assert score.shape[:2] == (2, 1) and score.shape[2] == score.shape[3] and score.shape[2] >= 2


def test_paper_sizes_at_256_and_scaled_down_below():
    cfg = resolve_cyclegan_config(registry.make_config("cyclegan", "cyclegan", channels=3, image_size=256))
    assert (cfg.width, cfg.blocks, cfg.d_width, cfg.d_layers) == (64, 9, 64, 3)  # 9 blocks, 70x70 patches
    model = registry.create("cyclegan", "cyclegan", channels=3, image_size=256)
    # the reference implementation's counts: 11,378,179 per generator and 2,764,737 per discriminator
    assert registry.count_params(model.g_ab) == 11_378_179 and registry.count_params(model.d_b) == 2_764_737
    small = resolve_cyclegan_config(registry.make_config("cyclegan", "cyclegan", channels=1, image_size=28))
    assert small.blocks == 6 and small.d_layers == 2 and small.width == 16
    with pytest.raises(ValueError, match="multiple of 4"):
        registry.create("cyclegan", "cyclegan", image_size=30)


def test_random_crop_cuts_each_image_at_its_own_offset():
    x = torch.arange(4 * 6 * 6, dtype=torch.float32).view(4, 1, 6, 6).repeat(1, 3, 1, 1)
    torch.manual_seed(0)
    y = random_crop(x, 4)
    assert y.shape == (4, 3, 4, 4)
    for i in range(4):  # every crop is a contiguous window of its own image
        hits = [(r, c) for r in range(3) for c in range(3) if torch.equal(x[i, :, r:r + 4, c:c + 4], y[i])]
        assert hits


# ------------------------------------------------------------------ image pool

def test_image_pool_fills_then_swaps_and_keeps_every_image():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(3).float().view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and pool.count == 3       # filling: returned as they came
    second = torch.arange(10, 13).float().view(3, 1, 1, 1)
    out = pool.query(second)
    assert out[0].item() == 10 and pool.count == 4                            # the 4th fills the pool
    seen = []
    for step in range(20):
        new = torch.tensor([100.0 + 2 * step, 101.0 + 2 * step]).view(2, 1, 1, 1)
        old = sorted(pool.images.flatten().tolist())
        out = pool.query(new).flatten().tolist()
        # nothing is lost or invented: pool + returned == old pool + new images
        assert sorted(pool.images.flatten().tolist() + out) == sorted(old + new.flatten().tolist())
        seen += [v < 100 + 2 * step for v in out]
    assert 0.2 < sum(seen) / len(seen) < 0.8                                   # about half come from the pool
    assert torch.equal(ImagePool(0).query(second), second)                    # size 0: no pool


def test_image_pool_state_round_trip_gives_the_same_answers():
    torch.manual_seed(1)
    pool = ImagePool(3)
    pool.query(torch.randn(5, 2, 4, 4))
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in pool.state().items()}
    batch = torch.randn(4, 2, 4, 4)
    rng = torch.get_rng_state()
    a = pool.query(batch)
    other = ImagePool(3)
    other.load(state, torch.device("cpu"))
    torch.set_rng_state(rng)
    assert torch.equal(other.query(batch), a) and torch.equal(other.images, pool.images)


# ------------------------------------------------------------------ command line

def test_compare_identity_and_cyclegan_then_translate(domains, tmp_path, capsys):
    out = tmp_path / "cmp"
    flags = args(domains, out)[2:]
    flags = [f for f in flags if f not in ("--model", "cyclegan", "--out", str(out))]
    assert main(["compare", "cyclegan", *flags, "--models", "identity,cyclegan", "--seeds", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "target_share" and set(summary["models"]) == {"identity", "cyclegan"}
    identity = json.loads((out / "identity-seed0" / "metrics.json").read_text())
    assert identity["cycle_error"] == 0 and identity["params"] == 0 and identity["target_share"] <= 0.5
    run = out / "cyclegan-seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("target_share_a2b", "target_share_b2a", "fd_a2b", "fd_b2a", "fd_floor", "cycle_error",
                "train_seconds", "params", "flops_per_example"):
        assert key in metrics, key
    config = json.loads((run / "config.json").read_text())
    assert config["data_info"]["channels"] == 3 and config["data_info"]["image_size"] == 16  # mixed -> RGB, median
    assert config["settings"]["identity_weight"] == 0.5   # colour images: the paper's identity loss
    assert (run / "triplets.png").is_file() and (run / "samples" / "epoch-001.png").is_file()
    assert "Translations of held-out images" in (run / "report.html").read_text()
    capsys.readouterr()
    assert main(["translate", str(run), "--input", str(domains[1]), "--direction", "b2a", "--out", str(tmp_path / "t")]) == 0
    files = sorted((tmp_path / "t").glob("*.png"))
    assert len(files) == 24 and Image.open(files[0]).size == (16, 16) and Image.open(files[0]).mode == "RGB"
    assert "from discs to squares" in capsys.readouterr().out
    predictor = get_task("cyclegan").predictor(Run(run))         # the same, in memory
    x, names = predictor.read([str(domains[1])])
    y = predictor.translate(x, "b2a")
    assert y.dtype == np.uint8 and y.shape == (24, 3, 16, 16)
    assert np.array_equal(y[0].transpose(1, 2, 0), np.asarray(Image.open(tmp_path / "t" / f"{Path(names[0]).stem}.png")))
    assert np.array_equal(predictor.translate([Image.open(n) for n in names[:3]], "b2a"), y[:3])  # decoded as files are
    with pytest.raises(UserError, match="a2b or b2a"):
        predictor.translate(x, "sideways")
    with pytest.raises(UserError, match=r"\(N, 3, 16, 16\) uint8"):
        predictor.translate(x.float(), "a2b")


def test_identity_loss_is_off_for_grayscale_unless_asked(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (8, 8)).astype(np.uint8), "L").save(tmp_path / name / f"{i}.png")
    for extra, expected in (((), 0.0), (("--identity-weight", "0.3"), 0.3)):
        out = tmp_path / f"run{expected}"
        assert main(["train", "cyclegan", "--data-a", str(tmp_path / "a"), "--data-b", str(tmp_path / "b"),
                     "--model", "cyclegan", "--epochs", "1", "--batch-size", "4", "--judge-epochs", "1",
                     "--eval-samples", "4",
                     "--out", str(out), "--no-progress", *extra]) == 0
        assert json.loads((out / "config.json").read_text())["settings"]["identity_weight"] == expected


def test_ctrl_c_mid_epoch_then_resume_equals_uninterrupted(domains, tmp_path, monkeypatch):
    args_ = args(domains, tmp_path / "unused", "--epochs", "2", "--pool-size", "3", "--limit", "12")
    i = args_.index("--out")
    args_ = args_[:i] + args_[i + 2:]
    # 12 pairs / batch 4 = 3 steps an epoch; the pool (3) fills in the first step and swaps after it.
    # Ctrl-C before the 2nd step of epoch 2
    assert_ctrl_c_resume_is_exact(monkeypatch, tmp_path, args_, CycleJob, at_step=5, time_keys=TIME_FIELDS)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "cut" / "model.safetensors").read_bytes()


def test_compare_run_twice_reuses_both_runs(domains, tmp_path, capsys):
    """The identity is fitted in one step (1 epoch): a second compare with --epochs 2 reuses it
    and the cyclegan run, training nothing."""
    out = tmp_path / "cmp"
    argv = ["compare", "cyclegan", "--data", f"{domains[0]}~{domains[1]}", "--epochs", "2", "--seeds", "1",
            "--limit", "8", "--batch-size", "4", "--judge-epochs", "1", "--eval-samples", "8", "--no-progress",
            "--out", out]
    rc, first, _ = cli(capsys, *argv)
    assert rc == 0 and "== identity, seed 0" in first and "== cyclegan, seed 0" in first
    runs = [out / "identity-seed0", out / "cyclegan-seed0"]
    before = {r: sorted((p.name, p.stat().st_mtime_ns) for p in r.rglob("*")) for r in runs}
    rc, second, err = cli(capsys, *argv)
    assert rc == 0, err
    assert "==" not in second                                     # nothing trained
    assert {r: sorted((p.name, p.stat().st_mtime_ns) for p in r.rglob("*")) for r in runs} == before


@pytest.mark.parametrize("change, message", [
    (["--data-b", ""], "give both --data-a DIR and --data-b DIR"),
    (["--image-size", "30"], "multiple of 4"),
    (["--batch-size", "64"], "fewer than one batch"),
])
def test_bad_inputs_exit_2_with_one_line(domains, tmp_path, capsys, change, message):
    argv = args(domains, tmp_path / "run")
    i = argv.index(change[0]) if change[0] in argv else None
    argv = argv[:i] + argv[i + 2:] + change if i is not None else argv + change
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0]


def test_a_winning_discriminator_stops_training_and_keeps_the_last_checkpoint(domains, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(adversarial, "D_WIN_LOSS", 1e9)   # every step counts as an outright win
    out = tmp_path / "run"
    argv = args(domains, out, "--d-win-steps", "7")
    argv[argv.index("--epochs") + 1] = "3"             # 5 steps an epoch: the guard fires in epoch 2
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "7 steps in a row" in err[0] and "checkpoint" in err[0]
    state = load_state(out / "checkpoint" / "state.safetensors")
    assert state["position"]["epoch"] == 1 and not (out / "metrics.json").exists()


def test_unknown_builtin_class_and_tiny_folder_exit_2(tmp_path, capsys):
    assert main(["train", "cyclegan", "--data", "digits:3~x", "--model", "cyclegan", "--out", str(tmp_path / "r")]) == 2
    assert "unknown class of digits 'x'" in capsys.readouterr().err
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / name / f"{i}.png")
    assert main(["train", "cyclegan", "--data-a", str(tmp_path / "a"), "--data-b", str(tmp_path / "b"),
                 "--model", "cyclegan", "--out", str(tmp_path / "r2")]) == 2
    assert "at least 4 are needed" in capsys.readouterr().err
