"""The `gan` task: generate images like the user's; dcgan on trial against the fully connected mlp-gan.

One engine Job with two optimizers: each batch takes a discriminator step (real images up, generated
ones down) and, every ``d_steps`` batches, a generator step through the updated discriminator.
After each epoch a grid from one fixed noise batch is written to RUN/samples/ and the FD to the
held-out images is measured; after training, the full measures of gan_eval.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Diverged, Job, StepContext
from deepskeptic.errors import UserError, unknown_name
from deepskeptic.models import registry
from deepskeptic.models.gan import DCGAN_SIZES, DCGANConfig, resolve_dcgan_config
from deepskeptic.runs import Run
from deepskeptic.tasks import gan_eval
from deepskeptic.tasks.base import Task

D_WIN_LOSS = 0.01    # a discriminator loss below this on a batch: it tells every real from every fake
CHECK_EVERY_CUDA = 20  # on CUDA, look at the losses every this many steps (each look waits for the GPU)


class DiscriminatorWon(Diverged):
    """The discriminator separated real from generated images perfectly for too many steps in a row."""


class Guard:
    """The stability guards of both GAN tasks. ``update`` counts the steps in a row on which the
    discriminator's loss was below ``D_WIN_LOSS`` (it told every real from every generated image);
    ``check`` stops training — Diverged for a non-finite loss, DiscriminatorWon for a streak of
    ``win_steps`` (0: never) — with a message naming the last good checkpoint. The streak stays a
    tensor on the device, so counting never waits for the GPU; only ``check`` does."""

    def __init__(self, win_steps: int, device: torch.device, what: str, advice: str):
        self.win_steps, self.what, self.advice = win_steps, what, advice
        self.streak = torch.zeros((), device=device)

    def update(self, d_loss: torch.Tensor) -> None:
        self.streak = (self.streak + 1) * (d_loss < D_WIN_LOSS)

    def check(self, loss: torch.Tensor, step: int, run_path) -> None:
        where = f"; the last good checkpoint is in {run_path / 'checkpoint'}" if run_path else ""
        if not torch.isfinite(loss):
            raise Diverged(f"training diverged: a {self.what} loss became {loss.item()} at step {step}; "
                           f"{self.advice}{where}")
        if self.win_steps and self.streak.item() >= self.win_steps:
            raise DiscriminatorWon(
                f"the discriminator told every real from every generated image for {self.win_steps} steps in a "
                f"row (step {step}): the generator gets no signal; {self.advice}, or raise --d-win-steps{where}")


@dataclass
class Prepared:
    data: Any                          # ImageData: training images and the held-out test images
    judge: gan_eval.Judge
    reference: gan_eval.RealReference


def parse_classes(value: Any) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    return [n.strip() for n in names if n.strip()]


def load_data(settings: dict[str, Any]):
    """The data set of ``settings`` (val_split 0: the test split is the held-out set), filtered to
    ``classes``; ``limit_data`` cuts it to ``limit``."""
    from deepskeptic.data.images import load_image_data
    data = load_image_data(str(settings["data"]), image_size=settings["image_size"], val_split=0.0, unlabelled=True)
    wanted = parse_classes(settings.get("classes"))
    if wanted:
        for name in wanted:
            if name not in data.classes:
                raise unknown_name(f"class of {settings['data']}", name, data.classes)
        index = torch.tensor([data.classes.index(n) for n in wanted])
        remap = torch.full((len(data.classes),), -1, dtype=torch.long)
        remap[index] = torch.arange(len(wanted))
        tr, te = remap[data.y_train] >= 0, remap[data.y_test] >= 0
        data = dataclasses.replace(data, classes=list(wanted), x_train=data.x_train[tr], y_train=remap[data.y_train[tr]],
                                   x_test=data.x_test[te], y_test=remap[data.y_test[te]])
    return data


def limit_data(data, limit: int | None):
    """At most ``limit`` training images: a fixed subset, the same for every seed and model."""
    if limit is None or limit >= len(data.x_train):
        return data
    keep = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))[:limit]
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


@torch.no_grad()
def sample(generator: nn.Module, n: int, latent_dim: int, seed: int, device: torch.device,
           batch_size: int = 500) -> torch.Tensor:
    """``n`` generated images (n, C, S, S) uint8 from noise of a fixed seed, generator in eval mode."""
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    was_training = generator.training
    generator.eval()
    out = [gan_eval.to_uint8(generator(z[i:i + batch_size].to(device))) for i in range(0, n, batch_size)]
    generator.train(was_training)
    return torch.cat(out)


class GanJob(Job):
    unit = "img"

    def __init__(self, gan: nn.Module, x_train: torch.Tensor, settings: dict[str, Any], device: torch.device,
                 judge: gan_eval.Judge | None = None, reference: gan_eval.RealReference | None = None):
        self.generator, self.discriminator = gan.generator, gan.discriminator
        self.latent_dim = gan.latent_dim
        self.modules = {"generator": self.generator, "discriminator": self.discriminator}
        betas = (0.5, 0.999)  # beta1 0.5: Radford et al. found 0.9 oscillates
        self.optimizers = {"d": torch.optim.Adam(self.discriminator.parameters(), lr=settings["lr"], betas=betas),
                           "g": torch.optim.Adam(self.generator.parameters(), lr=settings["lr"], betas=betas)}
        compile_ = settings.get("compile")
        self.g_fn = torch.compile(self.generator) if compile_ else self.generator
        self.d_fn = torch.compile(self.discriminator) if compile_ else self.discriminator
        self.device = device
        self.channels_last = device.type == "cuda"   # NHWC: faster convolutions on tensor cores
        self.x_train = x_train.to(device)                                    # (N, C, S, S) uint8
        self.batch_size = settings["batch_size"]
        self.epoch_images = settings.get("epoch_images") or len(x_train)
        self.objective = settings["objective"]
        self.d_steps = settings["d_steps"]
        self.guard = Guard(settings["d_win_steps"], device, "GAN", "lower --lr or try --objective hinge")
        self.judge, self.reference = judge, reference
        self.fixed_noise = torch.randn(64, self.latent_dim, generator=torch.Generator().manual_seed(1234)).to(device)
        self.fd_seed = 4321   # the noise for the per-epoch FD: the same every epoch, so epochs compare
        self.step = 0
        self.g_loss = torch.zeros((), device=device)     # the last generator loss (carried when d_steps > 1)
        self.epochs_done = 0

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        # an epoch is a random ``epoch_images`` of the training images, drawn without replacement
        order = torch.randperm(len(self.x_train), generator=generator)[:self.epoch_images].to(self.device)
        full = len(order) // self.batch_size
        return list(order[:full * self.batch_size].view(full, self.batch_size))  # drop the ragged tail

    def losses(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        if self.objective == "hinge":
            return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()   # -log D(x) - log(1 - D(G(z)))

    def train_step(self, index: torch.Tensor, ctx: StepContext):
        real = gan_eval.to_float(self.x_train[index])      # (B, C, S, S) in [-1, 1]
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        z = torch.randn(len(index), self.latent_dim, device=ctx.device)
        with ctx.autocast():                                                 # discriminator step
            fake = self.g_fn(z)
            d_real = self.d_fn(real).float()                                 # (B,) logits
            d_fake = self.d_fn(fake.detach()).float()
        d_loss = self.losses(d_real, d_fake)
        ctx.backward_step(d_loss, "d")
        self.step += 1
        if self.step % self.d_steps == 0:                                    # generator step
            self.discriminator.requires_grad_(False)
            with ctx.autocast():
                score = self.d_fn(fake).float()
            # non-saturating: maximise log D(G(z)) (strong gradients while D wins); hinge: -D(G(z))
            g_loss = -score.mean() if self.objective == "hinge" else F.softplus(-score).mean()
            ctx.backward_step(g_loss, "g")
            self.discriminator.requires_grad_(True)
            self.g_loss = g_loss.detach()
        d_loss = d_loss.detach()
        self.guard.update(d_loss)
        if ctx.device.type != "cuda" or self.step % CHECK_EVERY_CUDA == 0:
            self.guard.check(d_loss + self.g_loss, self.step, self.run_path)
        squash = torch.sigmoid if self.objective == "ns" else (lambda t: t)
        return len(index), {"d_loss": d_loss, "g_loss": self.g_loss,
                            "d_real": squash(d_real.detach()).mean(), "d_fake": squash(d_fake.detach()).mean()}

    def validate(self, epoch: int) -> dict[str, float]:
        self.epochs_done += 1
        if self.run_path is not None:
            self.generator.eval()
            with torch.no_grad():
                images = gan_eval.to_uint8(self.generator(self.fixed_noise))
            self.generator.train()
            gan_eval.save_png(self.run_path / "samples" / f"epoch-{self.epochs_done:03d}.png", images)
        if self.judge is None or self.reference is None:
            return {}
        fake = sample(self.generator, len(self.reference.heldout), self.latent_dim, self.fd_seed, self.device)
        features, _ = self.judge.outputs(fake)
        return {"fd": gan_eval.frechet_distance(features, self.reference.heldout_features)}

    def extra_state(self) -> dict[str, Any]:
        return {"step": self.step, "streak": self.guard.streak, "g_loss": self.g_loss, "epochs_done": self.epochs_done}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.step, self.epochs_done = state["step"], state["epochs_done"]
        self.guard.streak, self.g_loss = state["streak"].to(self.device), state["g_loss"].to(self.device)


def flops_per_example(gan: nn.Module, latent_dim: int) -> int:
    """Forward FLOPs to generate one image and score it once (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    gan.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        gan.discriminator(gan.generator(torch.zeros(1, latent_dim)))
    gan.train()
    return int(counter.get_total_flops())


class GanTask(Task):
    name = "gan"
    description = "generate images: dcgan against the fully connected mlp-gan"
    primary_metric = "fd"
    higher_is_better = False
    default_epochs = 5
    default_models = ("mlp-gan", "dcgan")
    task_defaults = {
        "image_size": None,     # pixels per side; default the data's own (dcgan makes 8, 16, 28, 32, 64, 128)
        "classes": None,        # comma-separated class names to keep (default: all)
        "limit": None,          # at most this many training images (a fixed subset; quick tries)
        "epoch_images": 10000,  # images per epoch (a random draw): a grid and an FD every ~10k images, since
                                # a GAN's epochs mark progress, not passes (a 2-core CPU does ~1 pass in 10 min)
        "objective": "ns",      # 'ns' non-saturating (Goodfellow et al. 2014) or 'hinge' (steadier at times)
        "d_steps": 1,           # discriminator steps per generator step
        "d_win_steps": 1000,    # stop when D wins outright this many steps in a row (0: never stop)
        "judge": None,          # an image run whose classifier measures; default: train one and cache it
        "judge_epochs": 5,      # epochs of the cached judge (cnn): ~89 % on Fashion-MNIST, under a minute on 2 cores
        "judge_limit": 12000,   # at most this many training images for the judge (minutes on 2 cores)
        "fd_samples": 2000,     # images per side for FD, precision and recall (FD is biased at small n)
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--image-size", type=int, help="resize images to this many pixels per side")
        parser.add_argument("--classes", help="comma-separated class names to keep, e.g. sneaker,sandal")
        parser.add_argument("--limit", type=int, help="use at most this many training images")
        parser.add_argument("--epoch-images", type=int, help="training images per epoch, drawn at random "
                            "(10000; the whole set when smaller)")
        parser.add_argument("--objective", choices=["ns", "hinge"], help="adversarial loss (ns)")
        parser.add_argument("--d-steps", type=int, help="discriminator steps per generator step (1)")
        parser.add_argument("--d-win-steps", type=int, help="stop after the discriminator wins outright "
                            "this many steps in a row (1000; 0: never)")
        parser.add_argument("--judge", help="image run whose classifier measures the samples (default: cached cnn)")
        parser.add_argument("--judge-epochs", type=int, help="epochs of an automatically trained judge (5)")
        parser.add_argument("--judge-limit", type=int, help="training images of an automatically trained judge (12000)")
        parser.add_argument("--fd-samples", type=int, help="images per side for FD, precision, recall (2000)")

    def check_settings(self, settings: dict[str, Any]) -> None:
        for key in ("d_steps", "judge_epochs", "judge_limit", "fd_samples", "limit", "image_size", "epoch_images"):
            value = settings.get(key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"--{key.replace('_', '-')} must be a positive whole number, got {value!r}")
        if not isinstance(settings["d_win_steps"], int) or settings["d_win_steps"] < 0:
            raise UserError(f"--d-win-steps must be 0 or more, got {settings['d_win_steps']!r}")
        if settings["objective"] not in ("ns", "hinge"):
            raise UserError(f"objective must be ns or hinge, got {settings['objective']!r}")

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        self.check_settings(settings)
        full = load_data(settings)
        data = limit_data(full, settings.get("limit"))
        if len(data.x_test) < 2:
            raise UserError(f"data set {settings['data']} has {len(data.x_test)} held-out image(s); at least 2 "
                            f"are needed to measure the generated images: add images")
        self.check_fit(settings, data)  # before the judge: a wrong size or batch fails in a second
        # judge and floor from all training images: --limit changes what the GAN sees, not the yardstick
        judge = gan_eval.get_judge(str(settings["data"]), full, settings)
        reference = gan_eval.real_reference(judge, full.x_train, data.x_test, settings["fd_samples"])
        return Prepared(data, judge, reference)

    def model_config(self, settings: dict[str, Any], channels: int, image_size: int) -> Any:
        cfg = registry.make_config(self.name, settings["model"], **{
            **settings["model_config"], "channels": channels, "image_size": image_size})
        return resolve_dcgan_config(cfg) if isinstance(cfg, DCGANConfig) else cfg  # auto widths recorded

    def create_model(self, settings: dict[str, Any], channels: int, image_size: int) -> nn.Module:
        cfg = self.model_config(settings, channels, image_size)
        try:
            return registry.spec(self.name, settings["model"]).build(cfg)
        except ValueError as exc:
            best = min(DCGAN_SIZES, key=lambda s: (abs(s - image_size), -s))
            raise UserError(f"images of {image_size} px do not fit model '{settings['model']}': {exc}; "
                            f"pass --image-size {best} (or another of those sizes)") from None

    def check_fit(self, settings: dict[str, Any], data) -> nn.Module:
        """The model for the data; UserError when the images do not fit it or one batch."""
        if len(data.x_train) < settings["batch_size"]:
            raise UserError(f"{settings['data']} has {len(data.x_train)} training image(s), fewer than one batch "
                            f"({settings['batch_size']}): add images or lower --batch-size")
        return self.create_model(settings, data.channels, data.image_size)

    def build(self, settings, prepared: Prepared, device):
        data = prepared.data
        gan = self.check_fit(settings, data)
        flops = flops_per_example(gan, gan.latent_dim)
        gan = gan.to(device)
        if device.type == "cuda":
            gan = gan.to(memory_format=torch.channels_last)
        prepared.judge.to(device)
        info = {"model_config": dataclasses.asdict(self.model_config(settings, data.channels, data.image_size)),
                "flops_per_example": flops,
                "data_info": {"name": data.name, "source": data.source, "classes": data.classes,
                              "channels": data.channels, "image_size": data.image_size,
                              "train": len(data.x_train), "heldout": len(data.x_test), "skipped": data.skipped},
                "judge": prepared.judge.run_path}
        return GanJob(gan, data.x_train, settings, device, prepared.judge, prepared.reference), info

    def finish(self, run: Run, job: GanJob, prepared: Prepared, settings, device) -> dict[str, Any]:
        from deepskeptic.tasks.gan_report import write_pictures
        return measure_run(job.generator, job.latent_dim, prepared, settings["seed"], device,
                           write_pictures=lambda fake: write_pictures(run, job.generator, job.latent_dim,
                                                                      fake, prepared, device))

    def load_generator(self, run: Run, device: torch.device) -> tuple[nn.Module, int]:
        config = run.config
        gan = registry.spec(self.name, config["settings"]["model"]).build(
            registry.make_config(self.name, config["settings"]["model"], **config["model_config"]))
        run.load_weights({"generator": gan.generator})
        return gan.generator.to(device).eval(), gan.latent_dim

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        from deepskeptic.tasks.gan_report import write_gan_report
        write_gan_report(run, metrics)

    def generate(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks.gan_report import generate
        return generate(self, run, args)

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        if data is not None:
            raise UserError("a gan run is measured against its own data; leave --data out")
        device = torch.device("cpu")
        settings = run.config["settings"]
        generator, latent_dim = self.load_generator(run, device)
        return measure_run(generator, latent_dim, self.prepare(settings), settings["seed"], device)

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"channels": 1, "image_size": 28, "description": "28x28 grayscale images (Fashion-MNIST); --data for yours"}
        d = load_data({"data": data, "image_size": None, "classes": None})
        return {"channels": d.channels, "image_size": d.image_size,
                "description": f"{d.image_size}x{d.image_size}x{d.channels} images ({data})"}

    def example_model(self, name: str, shape: dict[str, Any]) -> nn.Module:
        return self.create_model({"model": name, "model_config": {}}, shape["channels"], shape["image_size"])


def measure_run(generator: nn.Module, latent_dim: int, prepared: Prepared, seed: int, device: torch.device,
                write_pictures=None) -> dict[str, Any]:
    """The final measures of a generator: FD and its floor, precision, recall, classes, memorisation."""
    ref, judge = prepared.reference, prepared.judge.to(device)
    fake = sample(generator, len(ref.heldout), latent_dim, seed + 1, device)
    metrics = {**gan_eval.measure(judge, fake, ref), **ref.floor}
    metrics["fd_ratio"] = metrics["fd"] / max(1e-12, metrics["fd_floor"])
    m = min(200, len(fake), len(ref.heldout))   # memorisation: pixel distance to the nearest training image
    _, d_fake = gan_eval.nearest(fake[:m], prepared.data.x_train)
    _, d_real = gan_eval.nearest(ref.heldout[:m], prepared.data.x_train)
    metrics.update(nearest_train_distance=d_fake.median().item(), heldout_nearest_train_distance=d_real.median().item(),
                   memorisation_ratio=d_fake.median().item() / max(1e-12, d_real.median().item()),
                   fd_samples=len(fake), judge=judge.run_path, judge_test_accuracy=judge.test_accuracy,
                   g_params=registry.count_params(generator))
    if write_pictures is not None:
        write_pictures(fake)
    return metrics
