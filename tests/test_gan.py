"""Behaviour tests for the `gan` task: networks, one alternating step, FD, guards, CLI, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import assert_ctrl_c_resume_is_exact
from conftest import TIME_FIELDS

from deepskeptic.checkpoint import load_state
from deepskeptic.cli import main
from deepskeptic.engine import Diverged, StepContext
from deepskeptic.models import registry
from deepskeptic.models.gan import DCGAN_SIZES
from deepskeptic.runs import Run
from deepskeptic.tasks import get_task
from deepskeptic.tasks.common import adversarial
from deepskeptic.tasks.common import judge as judging
from deepskeptic.tasks.gan.data import load_data
from deepskeptic.tasks.gan.jobs import GanJob


@pytest.fixture(autouse=True)
def _cache_and_threads(tmp_path_factory, monkeypatch, one_thread):
    """One judge cache for the whole session (each tiny data set trains its judge once), and one
    thread: on 16-px images more threads only add waiting, a lot of it on a busy machine."""
    root = tmp_path_factory.getbasetemp() / "judge-cache"
    monkeypatch.setenv("DEEPSKEPTIC_CACHE", str(root))


def shapes_folder(root: Path, n: int = 24, size: int = 16) -> Path:
    """Two classes of tiny grayscale PNGs: bright squares and bright discs on noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for cls in ("square", "disc"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 40, (size, size)).astype(np.uint8)
            c, r = rng.integers(5, size - 5, 2), rng.integers(3, 5)
            mask = (np.abs(yy - c[0]) <= r) & (np.abs(xx - c[1]) <= r) if cls == "square" else \
                (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r
            img[mask] = 220
            Image.fromarray(img, "L").save(root / cls / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return shapes_folder(tmp_path_factory.mktemp("shapes"))


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "gan", "--data", str(data), "--model", "dcgan", "--epochs", "2", "--batch-size", "8",
            "--judge-epochs", "1", "--out", str(out), "--no-progress", *extra]


# ------------------------------------------------------------------ networks

@pytest.mark.parametrize("size", DCGAN_SIZES)
def test_dcgan_generator_and_discriminator_shapes(size):
    for channels in (1, 3):
        gan = registry.create("gan", "dcgan", channels=channels, image_size=size, g_width=8, d_width=8)
        x = gan(torch.randn(2, gan.latent_dim))
        assert x.shape == (2, channels, size, size) and x.min() >= -1 and x.max() <= 1
        assert gan.discriminator(x).shape == (2,)


def test_mlp_gan_shapes_and_unsupported_dcgan_size():
    gan = registry.create("gan", "mlp-gan", channels=3, image_size=12)
    assert gan(torch.randn(4, 100)).shape == (4, 3, 12, 12)
    assert gan.discriminator(torch.zeros(4, 3, 12, 12)).shape == (4,)
    with pytest.raises(ValueError, match="28, 32, 64, 128"):
        registry.create("gan", "dcgan", image_size=30)


def _job(**overrides) -> GanJob:
    settings = {"lr": 2e-4, "batch_size": 8, "objective": "ns", "d_steps": 1, "d_win_steps": 0, **overrides}
    gan = registry.create("gan", "dcgan", channels=1, image_size=8, g_width=8, d_width=8)
    x = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    return GanJob(gan, x, settings, torch.device("cpu"))


def test_one_alternating_step_moves_each_network_only_with_its_own_optimizer(monkeypatch):
    job = _job()
    nets = {"d": job.discriminator, "g": job.generator}
    snap = lambda: {k: [p.detach().clone() for p in m.parameters()] for k, m in nets.items()}  # noqa: E731
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
    calls = []
    original = StepContext.backward_step

    def spy(self, loss, optimizer="main", **kw):
        before = snap()
        original(self, loss, optimizer, **kw)
        after = snap()
        calls.append((optimizer, {k: changed(before[k], after[k]) for k in nets}))
    monkeypatch.setattr(StepContext, "backward_step", spy)
    start = snap()
    batch = job.epoch_batches(0, torch.Generator().manual_seed(0))[0]
    count, stats = job.train_step(batch, StepContext(torch.device("cpu"), job.optimizers, False))
    assert count == 8 and set(stats) >= {"d_loss", "g_loss"}
    assert calls == [("d", {"d": True, "g": False}), ("g", {"d": False, "g": True})]
    end = snap()
    assert changed(start["d"], end["d"]) and changed(start["g"], end["g"])
    assert all(p.requires_grad for p in job.discriminator.parameters())  # unfrozen after the G step


# ------------------------------------------------------------------ measures

def test_fd_matches_closed_form_for_gaussians_and_is_zero_for_identical_sets():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 5 + 1 + 1 + 0
    assert judging.fd_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-9)
    # a full covariance against itself, shifted: only the mean term remains
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 4))
    sigma = m @ m.T + np.eye(4)
    assert judging.fd_from_stats(mu1[:1].repeat(4), sigma, np.zeros(4), sigma) == pytest.approx(4 * mu1[0] ** 2, abs=1e-6)
    f = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
    assert judging.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    # samples of two Gaussians come close to the closed form
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20000, 2, generator=g)
    y = torch.randn(20000, 2, generator=g) * torch.tensor([2.0, 1.0]) + torch.tensor([3.0, 0.0])
    assert judging.frechet_distance(x, y) == pytest.approx(9 + 1, rel=0.05)


def _judge(model: torch.nn.Module) -> judging.Judge:
    return judging.Judge(model.eval(), torch.zeros(1), torch.ones(1), ["a", "b"], 1, 16, "-", None)


def test_judge_features_are_the_pooled_conv_map_or_the_penultimate_layer_without_convs():
    x = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    cnn = registry.create("image", "cnn", in_channels=1, image_size=16, num_classes=2)
    features, logits = _judge(cnn).outputs(x)
    last_conv = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert features.shape == (5, last_conv.out_channels) and logits.shape == (5, 2)
    with torch.no_grad():  # the spatial mean of the conv stack's output, recomputed by hand
        stack = torch.nn.Sequential(*list(cnn.children())[:[i for i, m in enumerate(cnn.children())
                                                            if isinstance(m, torch.nn.Flatten)][0]])
        assert torch.allclose(features, stack(x.float() / 255).mean((2, 3)), atol=1e-5)
    mlp = registry.create("image", "mlp", in_channels=1, image_size=16, num_classes=2)
    features, _ = _judge(mlp).outputs(x)
    assert features.shape == (5, mlp[-1].in_features)


def test_pixel_noise_on_real_images_is_far_from_them_in_the_judges_feature_space():
    """The reason for pooled conv features: a trained judge must see texture, not only the class."""
    data = load_data({"data": "digits", "image_size": None, "classes": None})
    judge = judging.get_judge("digits", data, {"judge": None, "judge_epochs": 5, "judge_limit": 0, "device": "cpu"})
    g = torch.Generator().manual_seed(0)
    ref = judging.real_reference(judge, data.x_train, data.x_test, 300)
    noisy = (ref.heldout.float() + 60 * torch.randn(ref.heldout.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    assert judging.measure(judge, noisy, ref)["fd"] > 3 * ref.floor["fd_floor"]


def test_precision_and_recall_of_identical_and_disjoint_sets():
    real = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    assert judging.precision_recall(real, real.clone()) == (1.0, 1.0)
    assert judging.precision_recall(real, real + 100) == (0.0, 0.0)
    half = torch.cat([real[:100], real[:100] + 100])  # half on the manifold, covering half of it
    p, r = judging.precision_recall(real, half)
    assert p == pytest.approx(0.5) and 0.5 <= r < 1.0


# ------------------------------------------------------------------ guards

def test_non_finite_loss_and_a_winning_discriminator_stop_training(monkeypatch):
    job = _job()
    ctx = StepContext(torch.device("cpu"), job.optimizers, False)
    batch = job.epoch_batches(0, torch.Generator().manual_seed(0))[0]
    hook = job.discriminator.register_forward_hook(lambda m, i, out: out * float("nan"))
    with pytest.raises(Diverged, match="became nan"):
        job.train_step(batch, ctx)
    hook.remove()
    job = _job(d_win_steps=3)
    monkeypatch.setattr(adversarial, "D_WIN_LOSS", 1e9)  # every step counts as an outright win
    ctx = StepContext(torch.device("cpu"), job.optimizers, False)
    job.train_step(batch, ctx)
    job.train_step(batch, ctx)
    with pytest.raises(adversarial.DiscriminatorWon, match="3 steps in a row"):
        job.train_step(batch, ctx)


def test_guard_exits_2_with_one_line_and_keeps_the_last_good_checkpoint(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(adversarial, "D_WIN_LOSS", 1e9)
    out = tmp_path / "run"
    # 38 training images / batch 8 = 4 steps per epoch: the guard fires in epoch 2, after a checkpoint
    assert main(train_args(folder, out, "--d-win-steps", "6")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: the discriminator told every real") and "checkpoint" in err[0]
    state = load_state(out / "checkpoint" / "state.safetensors")
    assert state["position"]["epoch"] == 1 and not (out / "metrics.json").exists()


# ------------------------------------------------------------------ command line

def test_cli_train_report_generate_and_evaluate(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(folder, out, "--fd-samples", "20")) == 0   # the old name of --eval-samples
    assert "fd-samples is now called eval-samples" in capsys.readouterr().err
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["eval_samples"] == 20 and "fd_samples" not in settings
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("fd", "fd_floor", "fd_ratio", "precision", "recall", "class_histogram", "memorisation_ratio",
                "train_seconds", "params", "flops_per_example", "device", "seed", "epochs"):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and metrics["fd"] >= 0 and set(metrics["class_histogram"]) == {"disc", "square"}
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch-001.png", "epoch-002.png", "final.png"]
    assert (out / "interpolation.png").is_file() and (out / "nearest.png").is_file()
    history = Run(out).history()
    assert all("val_fd" in h and "train_d_loss" in h and "train_g_loss" in h for h in history)
    html = (out / "report.html").read_text()
    assert "epoch by epoch" in html and "latent interpolation" in html and "nearest training image" in html
    gen = tmp_path / "gen"
    assert main(["generate", str(out), "--n", "4", "--out", str(gen)]) == 0
    files = sorted(gen.glob("sample-*.png"))
    assert len(files) == 4 and Image.open(files[0]).size == (16, 16)
    images = get_task("gan").predictor(Run(out)).generate(4, seed=0)   # what generate wrote, as arrays
    assert images.dtype == np.uint8 and images.shape == (4, 1, 16, 16)
    assert all(np.array_equal(np.asarray(Image.open(f)), image[0]) for f, image in zip(files, images))
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["fd"] == pytest.approx(metrics["fd"]) and again["fd_floor"] == pytest.approx(metrics["fd_floor"])
    config = json.loads((out / "config.json").read_text())       # a run saved before the rename
    config["settings"]["fd_samples"] = config["settings"].pop("eval_samples")
    (out / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == again


def test_ctrl_c_mid_epoch_then_resume_equals_uninterrupted(folder, tmp_path, monkeypatch):
    args = train_args(folder, tmp_path / "unused", "--classes", "square,disc")
    i = args.index("--out")
    args = args[:i] + args[i + 2:]
    # 4 steps per epoch: Ctrl-C before the 2nd step of epoch 2
    assert_ctrl_c_resume_is_exact(monkeypatch, tmp_path, args, GanJob, at_step=6, time_keys=TIME_FIELDS)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "cut" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("extra, message", [
    (["--image-size", "30"], "makes images of 8, 16, 28, 32, 64, 128 px"),
    (["--classes", "square,triangle"], "unknown class"),
    (["--batch-size", "500"], "fewer than one batch"),
    (["--objective", "wgan"], "invalid choice"),
])
def test_bad_inputs_exit_2_with_one_line(folder, tmp_path, capsys, extra, message):
    assert main(train_args(folder, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_a_folder_without_classes_trains_and_is_judged_by_which_way_up_its_images_are(tmp_path):
    rng = np.random.default_rng(0)
    flat = tmp_path / "shoes"
    flat.mkdir()
    for i in range(40):   # an 'L' (bar down the left, foot along the bottom): each turn looks different
        img = rng.integers(0, 30, (16, 16)).astype(np.uint8)
        x, y, n = rng.integers(1, 5), rng.integers(1, 4), rng.integers(8, 11)
        img[y:y + n, x:x + 3] = 230
        img[y + n - 3:y + n, x:x + n] = 230
        Image.fromarray(img, "L").save(flat / f"{i:03d}.png")
    out = tmp_path / "run"
    assert main(train_args(flat, out, "--judge-epochs", "8")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["class_histogram"]) == judging.ROTATIONS and metrics["fd"] >= 0
    assert metrics["judge_test_accuracy"] > 0.6       # it learned the turns (chance: 0.25)
    assert metrics["heldout_class_histogram"]["upright"] > 0.6


def test_a_folder_without_images_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no pictures here")
    assert main(train_args(tmp_path, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no images" in err[0]
