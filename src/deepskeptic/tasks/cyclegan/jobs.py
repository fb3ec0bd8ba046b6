"""The engine jobs of the `cyclegan` task: CycleGAN's, and the identity baseline's empty one.

One Job, two optimizers (both generators; both discriminators), per batch: a generator step
(least-squares adversarial + cycle + identity losses, discriminators frozen), then a discriminator
step on real images and on generated ones drawn from a pool of the last 50 fakes (Shrivastava et
al. 2017). The pools live in the checkpoint, so resume is exact. Losses follow Zhu et al. 2017.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Job, StepContext
from deepskeptic.tasks.common.adversarial import CHECK_EVERY_CUDA, Guard, ImagePool, to_float
from deepskeptic.tasks.common.flops import forward_flops


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


class CycleJob(Job):
    unit = "pair"

    def __init__(self, model: nn.Module, a_train: torch.Tensor, b_train: torch.Tensor, settings: dict[str, Any],
                 device: torch.device, evaluator: Callable[["CycleJob", int], dict[str, float]] | None = None):
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
        x = to_float(x_uint8)
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
        return self.evaluator(self, epoch) if self.evaluator else {}

    def extra_state(self) -> dict[str, Any]:
        return {"pools": {k: p.state() for k, p in self.pools.items()}, "step": self.step,
                "streak": self.guard.streak}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for k, p in self.pools.items():
            p.load(state["pools"][k], self.device)
        self.step = state["step"]
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


def flops_per_pair(model: nn.Module, channels: int, size: int) -> int:
    """Forward FLOPs to translate one image each way and score both (a multiply-add counts 2)."""
    x = torch.zeros(1, channels, size, size)
    return (forward_flops(nn.Sequential(model.g_ab, model.d_b), x)
            + forward_flops(nn.Sequential(model.g_ba, model.d_a), x))
