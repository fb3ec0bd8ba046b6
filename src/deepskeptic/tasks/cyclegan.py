"""The `cyclegan` task: translate images between two domains without pairs; cyclegan against the
identity mapping.

One engine Job, two optimizers (both generators; both discriminators), per batch: a generator step
(least-squares adversarial + cycle + identity losses, discriminators frozen), then a discriminator
step on real images and on generated ones drawn from a pool of the last 50 fakes (Shrivastava et
al. 2017). The pools live in the checkpoint, so resume is exact. Losses follow Zhu et al. 2017.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Job, StepContext
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.gan import CycleGANConfig, resolve_cyclegan_config
from deepskeptic.runs import Run
from deepskeptic.tasks import gan_eval
from deepskeptic.tasks.base import Task
from deepskeptic.tasks.cyclegan_data import DEFAULT_PAIR, PairData, judge_data, limit_pair, load_pair
from deepskeptic.tasks.gan import CHECK_EVERY_CUDA, Guard

class ImagePool:
    """The last ``size`` generated images; a query returns, per image, either it or (with probability
    1/2, once the pool is full) an older one, which the new image replaces. Randomness: torch's CPU
    generator, so the GPU is never waited for."""

    def __init__(self, size: int):
        self.size = size
        self.images: torch.Tensor | None = None    # (size, C, H, W) once the first batch arrives
        self.count = 0

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        if self.images is None:
            self.images = torch.zeros((self.size, *images.shape[1:]), dtype=images.dtype, device=images.device)
        out = []
        for image in images:
            if self.count < self.size:                    # filling up: store and return the new one
                self.images[self.count] = image
                self.count += 1
                out.append(image)
            elif torch.rand(()).item() < 0.5:             # swap: return an old one, keep the new one
                j = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[j].clone())
                self.images[j] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> dict[str, Any]:
        return {"images": self.images, "count": self.count}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self.images = None if state["images"] is None else state["images"].to(device)
        self.count = state["count"]


def random_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), each image cut at its own random offset."""
    b, _, h, w = x.shape
    dy = torch.randint(0, h - size + 1, (b,), device=x.device)
    dx = torch.randint(0, w - size + 1, (b,), device=x.device)
    rows = torch.arange(size, device=x.device)[None, :] + dy[:, None]               # (B, size)
    cols = torch.arange(size, device=x.device)[None, :] + dx[:, None]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]         # (B, size, size, C)
    return out.permute(0, 3, 1, 2)                                                  # channels_last layout


@torch.no_grad()
def translate_images(generator: nn.Module, x_uint8: torch.Tensor, device: torch.device,
                     batch_size: int = 64) -> torch.Tensor:
    """uint8 (N, C, S, S) -> translated uint8 (N, C, S, S), generator in eval mode."""
    was = generator.training
    generator.eval()
    out = [gan_eval.to_uint8(generator(gan_eval.to_float(x_uint8[i:i + batch_size].to(device))))
           for i in range(0, len(x_uint8), batch_size)]
    generator.train(was)
    return torch.cat(out) if out else x_uint8[:0]


class CycleJob(Job):
    unit = "pair"

    def __init__(self, model: nn.Module, a_train: torch.Tensor, b_train: torch.Tensor, settings: dict[str, Any],
                 device: torch.device, evaluator=None):
        self.g_ab, self.g_ba, self.d_a, self.d_b = model.g_ab, model.g_ba, model.d_a, model.d_b
        self.modules = {"g_ab": self.g_ab, "g_ba": self.g_ba, "d_a": self.d_a, "d_b": self.d_b}
        betas = (0.5, 0.999)  # the paper's Adam
        generators = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        discriminators = [*self.d_a.parameters(), *self.d_b.parameters()]
        self.optimizers = {"g": torch.optim.Adam(generators, lr=settings["lr"], betas=betas),
                           "d": torch.optim.Adam(discriminators, lr=settings["lr"], betas=betas)}
        wrap = torch.compile if settings.get("compile") else (lambda m: m)
        self.f_ab, self.f_ba, self.f_da, self.f_db = (wrap(m) for m in (self.g_ab, self.g_ba, self.d_a, self.d_b))
        self.device = device
        self.channels_last = device.type == "cuda"   # NHWC: faster convolutions on tensor cores
        self.a, self.b = a_train.to(device), b_train.to(device)                 # (N, C, S, S) uint8
        self.size = int(a_train.shape[-1])
        self.batch_size = settings["batch_size"]
        self.cycle_weight = settings["cycle_weight"]
        self.identity_weight = settings["identity_weight"] * settings["cycle_weight"]
        self.jitter, self.flip = settings["jitter"], settings["flip"]
        self.pools = {"a": ImagePool(settings["pool_size"]), "b": ImagePool(settings["pool_size"])}
        self.guard = Guard(settings.get("d_win_steps", 0), device, "CycleGAN", "lower --lr")
        self.evaluator = evaluator   # called after each epoch: (job, epoch) -> validation metrics
        self.step = 0
        self.epochs_done = 0

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        """Unpaired: an epoch is max(|A|, |B|) images of each domain, each domain in its own order."""
        n = max(len(self.a), len(self.b))
        full = n // self.batch_size

        def order(m: int) -> torch.Tensor:
            reps = -(-n // m)
            return torch.cat([torch.randperm(m, generator=generator) for _ in range(reps)])[:full * self.batch_size]
        ia, ib = order(len(self.a)).to(self.device), order(len(self.b)).to(self.device)
        return list(zip(ia.view(full, self.batch_size), ib.view(full, self.batch_size)))

    def augment(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 -> [-1, 1]; jitter: enlarge by 1/8 and crop back at random (the paper's 286 -> 256);
        flip: mirror half the images."""
        x = gan_eval.to_float(x_uint8)
        if self.jitter:
            big = self.size + max(1, self.size // 8)
            x = random_crop(F.interpolate(x, size=(big, big), mode="bilinear", align_corners=False), self.size)
        if self.flip:
            x = torch.where(torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5, x.flip(3), x)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def train_step(self, batch, ctx: StepContext):
        ia, ib = batch
        real_a, real_b = self.augment(self.a[ia]), self.augment(self.b[ib])
        self.d_a.requires_grad_(False)
        self.d_b.requires_grad_(False)
        with ctx.autocast():                                           # generator step
            fake_b, fake_a = self.f_ab(real_a), self.f_ba(real_b)
            rec_a, rec_b = self.f_ba(fake_b), self.f_ab(fake_a)
            score_b, score_a = self.f_db(fake_b).float(), self.f_da(fake_a).float()
            idt_b = self.f_ab(real_b) if self.identity_weight else None  # G_ab should leave B alone
            idt_a = self.f_ba(real_a) if self.identity_weight else None
        adversarial = F.mse_loss(score_b, torch.ones_like(score_b)) + F.mse_loss(score_a, torch.ones_like(score_a))
        cycle = F.l1_loss(rec_a.float(), real_a) + F.l1_loss(rec_b.float(), real_b)
        identity = (F.l1_loss(idt_b.float(), real_b) + F.l1_loss(idt_a.float(), real_a)
                    if self.identity_weight else torch.zeros((), device=ctx.device))
        g_loss = adversarial + self.cycle_weight * cycle + self.identity_weight * identity
        ctx.backward_step(g_loss, "g")
        self.d_a.requires_grad_(True)
        self.d_b.requires_grad_(True)
        old_a, old_b = self.pools["a"].query(fake_a.detach()), self.pools["b"].query(fake_b.detach())
        with ctx.autocast():                                           # discriminator step
            real_score_a, fake_score_a = self.f_da(real_a).float(), self.f_da(old_a).float()
            real_score_b, fake_score_b = self.f_db(real_b).float(), self.f_db(old_b).float()
        d_loss = 0.5 * (F.mse_loss(real_score_a, torch.ones_like(real_score_a))
                        + F.mse_loss(fake_score_a, torch.zeros_like(fake_score_a))
                        + F.mse_loss(real_score_b, torch.ones_like(real_score_b))
                        + F.mse_loss(fake_score_b, torch.zeros_like(fake_score_b)))
        ctx.backward_step(d_loss, "d")
        self.step += 1
        self.guard.update(d_loss.detach())
        if ctx.device.type != "cuda" or self.step % CHECK_EVERY_CUDA == 0:
            self.guard.check((g_loss + d_loss).detach(), self.step, self.run_path)
        return len(ia), {"g_loss": g_loss.detach(), "d_loss": d_loss.detach(), "adversarial": adversarial.detach(),
                         "cycle": cycle.detach(), "identity": identity.detach()}

    def validate(self, epoch: int) -> dict[str, float]:
        self.epochs_done += 1
        return self.evaluator(self, self.epochs_done) if self.evaluator else {}

    def extra_state(self) -> dict[str, Any]:
        return {"pools": {k: p.state() for k, p in self.pools.items()}, "step": self.step,
                "epochs_done": self.epochs_done, "streak": self.guard.streak}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for k, p in self.pools.items():
            p.load(state["pools"][k], self.device)
        self.step, self.epochs_done = state["step"], state["epochs_done"]
        if "streak" in state:   # checkpoints written before the guard counted wins have none
            self.guard.streak = state["streak"].to(self.device)


class IdentityJob(Job):
    """The identity baseline: nothing to train; one empty step so the run folder is complete."""
    unit = "pair"

    def __init__(self, model: nn.Module):
        self.g_ab, self.g_ba = model.g_ab, model.g_ba
        self.modules, self.optimizers = {}, {}

    def epoch_batches(self, epoch, generator):
        return [None]

    def train_step(self, batch, ctx):
        return 0, {}


@dataclass
class Prepared:
    pair: PairData
    judge: gan_eval.Judge
    reference_a: gan_eval.RealReference   # held-out A: what B -> A translations are measured against
    reference_b: gan_eval.RealReference


class CycleGanTask(Task):
    name = "cyclegan"
    description = "translate images between two domains without pairs: cyclegan against the identity"
    primary_metric = "target_share"
    higher_is_better = True
    default_epochs = 5
    default_models = ("identity", "cyclegan")
    task_defaults = {
        "data": DEFAULT_PAIR,     # a built-in pair SET:CLASS~CLASS, or DIR_A~DIR_B
        "data_a": None,           # folder of domain A images (with data_b: overrides data)
        "data_b": None,
        "image_size": None,       # pixels per side (multiple of 4); default the data's own, folders <= 256
        "limit": None,            # at most this many training images per domain (a fixed subset)
        "cycle_weight": 10.0,     # lambda of the cycle-consistency L1 loss (the paper)
        # identity L1 loss weight in units of lambda; None: 0.5 (the paper) for colour images, where
        # it exists to keep colours (Zhu et al. 2017, sec. 5.2), 0 for grayscale, where there is no
        # colour to keep and it only holds the generators near doing nothing: on sneaker~ankle-boot
        # it kept half of the boots boots (BENCHMARKS.md)
        "identity_weight": None,
        "d_win_steps": 1000,      # stop when both discriminators win outright this many steps in a row (0: never)
        "pool_size": 50,          # generated images kept per discriminator (the paper: 50; 0: no pool)
        "jitter": True,           # enlarge by 1/8 and random-crop back (the paper's 286 -> 256)
        "flip": True,             # random horizontal flips
        "judge": None,            # an image run telling A from B; default: train a cnn and cache it
        "judge_epochs": 3,
        "judge_limit": 12000,    # at most this many training images for the judge (minutes on 2 cores)
        "eval_samples": 500,      # held-out images per domain for the final measures (<= 200 per epoch)
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-a", help="folder of domain A images (any sizes)")
        parser.add_argument("--data-b", help="folder of domain B images")
        parser.add_argument("--image-size", type=int, help="pixels per side, a multiple of 4")
        parser.add_argument("--limit", type=int, help="at most this many training images per domain")
        parser.add_argument("--cycle-weight", type=float, help="lambda of the cycle loss (10)")
        parser.add_argument("--identity-weight", type=float, help="identity loss weight in units of lambda "
                            "(default 0.5 for colour images, 0 for grayscale)")
        parser.add_argument("--d-win-steps", type=int,
                            help="stop after this many steps in a row that the discriminators win outright (1000; 0: never)")
        parser.add_argument("--pool-size", type=int, help="generated images kept per discriminator (50)")
        parser.add_argument("--jitter", action=argparse.BooleanOptionalAction, default=None,
                            help="resize-and-crop jitter (on)")
        parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="random flips (on)")
        parser.add_argument("--judge", help="image run telling domain A from B (default: cached cnn)")
        parser.add_argument("--judge-epochs", type=int, help="epochs of an automatically trained judge (3)")
        parser.add_argument("--judge-limit", type=int, help="training images of an automatically trained judge")
        parser.add_argument("--eval-samples", type=int, help="held-out images per domain for measuring (500)")

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        for key in ("image_size", "limit", "judge_epochs", "judge_limit", "eval_samples"):
            value = settings.get(key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"--{key.replace('_', '-')} must be a positive whole number, got {value!r}")
        for key in ("cycle_weight", "identity_weight", "pool_size", "d_win_steps"):
            if settings[key] is not None and settings[key] < 0:
                raise UserError(f"--{key.replace('_', '-')} must not be negative, got {settings[key]!r}")
        full = load_pair(settings)
        pair = limit_pair(full, settings.get("limit"))
        self.check_fit(settings, pair)  # before the judge: a wrong size or batch fails in a second
        # judge and floors from all training images: --limit changes what the GAN sees, not the yardstick
        judge = gan_eval.get_judge(pair.source, judge_data(full), settings)
        for name in pair.names:
            if name not in judge.classes:
                raise UserError(f"judge {judge.run_path} knows classes {', '.join(judge.classes)}, not domain "
                                f"'{name}': pass a judge trained on the two domains (or leave --judge out)")
        n = settings["eval_samples"]
        return Prepared(pair, judge, gan_eval.real_reference(judge, full.a_train, pair.a_test, n),
                        gan_eval.real_reference(judge, full.b_train, pair.b_test, n))

    def model_config(self, settings: dict[str, Any], channels: int, image_size: int) -> Any:
        cfg = registry.make_config(self.name, settings["model"], **{
            **settings["model_config"], "channels": channels, "image_size": image_size})
        return resolve_cyclegan_config(cfg) if isinstance(cfg, CycleGANConfig) else cfg

    def create_model(self, settings: dict[str, Any], channels: int, image_size: int) -> nn.Module:
        try:
            return registry.spec(self.name, settings["model"]).build(self.model_config(settings, channels, image_size))
        except ValueError as exc:
            raise UserError(f"images of {image_size} px do not fit model '{settings['model']}': {exc}; pass "
                            f"--image-size {max(8, image_size // 4 * 4)}") from None

    def check_fit(self, settings: dict[str, Any], pair: PairData) -> nn.Module:
        """The model for the pair; UserError when the images do not fit it or a domain has less than a batch."""
        model = self.create_model(settings, pair.channels, pair.image_size)
        for name, n in (("A", len(pair.a_train)), ("B", len(pair.b_train))):
            if getattr(model, "trainable", True) and n < settings["batch_size"]:
                raise UserError(f"domain {name} has {n} training image(s), fewer than one batch "
                                f"({settings['batch_size']}): add images or lower --batch-size")
        return model

    def build(self, settings, prepared: Prepared, device):
        from deepskeptic.tasks.cyclegan_report import epoch_evaluator
        pair = prepared.pair
        model = self.check_fit(settings, pair)
        if settings["identity_weight"] is None:   # resolved here, so config.json records the value used
            settings["identity_weight"] = 0.5 if pair.channels == 3 else 0.0
        info = {"model_config": dataclasses.asdict(self.model_config(settings, pair.channels, pair.image_size)),
                "data_info": {"names": list(pair.names), "source": pair.source, "channels": pair.channels,
                              "image_size": pair.image_size, "train_a": len(pair.a_train), "train_b": len(pair.b_train),
                              "heldout_a": len(pair.a_test), "heldout_b": len(pair.b_test)},
                "judge": prepared.judge.run_path}
        prepared.judge.to(device)
        if not getattr(model, "trainable", True):
            settings.update(epochs=1, time_budget=None)   # nothing to train: one empty pass
            info["flops_per_example"] = 0
            return IdentityJob(model), info
        info["flops_per_example"] = flops_per_pair(model, pair.channels, pair.image_size)
        model = model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        job = CycleJob(model, pair.a_train, pair.b_train, settings, device, epoch_evaluator(prepared, device))
        return job, info

    def finish(self, run: Run, job, prepared: Prepared, settings, device) -> dict[str, Any]:
        from deepskeptic.tasks.cyclegan_report import measure, save_triplets
        metrics = measure(job.g_ab, job.g_ba, prepared, settings["eval_samples"], device)
        save_triplets(run.path / "triplets.png", job.g_ab, job.g_ba, prepared.pair, device)
        metrics["judge_test_accuracy"] = prepared.judge.test_accuracy
        metrics["judge"] = prepared.judge.run_path
        return metrics

    def load_model(self, run: Run, device: torch.device) -> nn.Module:
        config = run.config
        model = registry.spec(self.name, config["settings"]["model"]).build(
            registry.make_config(self.name, config["settings"]["model"], **config["model_config"]))
        if getattr(model, "trainable", True):
            run.load_weights({"g_ab": model.g_ab, "g_ba": model.g_ba, "d_a": model.d_a, "d_b": model.d_b})
        return model.to(device).eval()

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        from deepskeptic.tasks.cyclegan_report import write_cyclegan_report
        write_cyclegan_report(run, metrics)

    def translate(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks.cyclegan_report import translate_command
        return translate_command(self, run, args)

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        from deepskeptic.tasks.cyclegan_report import measure
        if data is not None:
            raise UserError("a cyclegan run is measured on its own domains; leave --data out")
        settings = run.config["settings"]
        device = torch.device("cpu")
        model = self.load_model(run, device)
        return measure(model.g_ab, model.g_ba, self.prepare(settings), settings["eval_samples"], device)

    def datasets(self) -> list[dict[str, Any]]:
        from deepskeptic.data.images import image_datasets
        fm = next(d for d in image_datasets() if d["name"] == "fashion-mnist")
        return [{**fm, "name": DEFAULT_PAIR, "task": "cyclegan",
                 "description": "Fashion-MNIST sneakers (A) and ankle boots (B); any two classes: fashion:X~Y, digits:X~Y"}]

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"channels": 3, "image_size": 256, "description": "256x256 RGB images (the paper's size)"}
        pair = load_pair({"data": data, "image_size": None, "limit": None})
        return {"channels": pair.channels, "image_size": pair.image_size,
                "description": f"{pair.image_size}x{pair.image_size}x{pair.channels} images ({data})"}

    def example_model(self, name: str, shape: dict[str, Any]) -> nn.Module:
        return self.create_model({"model": name, "model_config": {}}, shape["channels"], shape["image_size"])


def flops_per_pair(model: nn.Module, channels: int, size: int) -> int:
    """Forward FLOPs to translate one image each way and score both (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, channels, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.d_b(model.g_ab(x))
        model.d_a(model.g_ba(x))
    return int(counter.get_total_flops())
