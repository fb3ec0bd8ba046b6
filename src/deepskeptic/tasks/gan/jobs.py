"""The engine job of the `gan` task, and sampling from a generator.

One Job with two optimizers: each batch takes a discriminator step (real images up, generated ones
down) and, every ``d_steps`` batches, a generator step through the updated discriminator. After
each epoch a grid from one fixed noise batch is written to RUN/samples/ and the FD to the held-out
images is measured.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Job, StepContext
from deepskeptic.tasks.common.adversarial import CHECK_EVERY_CUDA, Guard, save_png, to_float, to_uint8
from deepskeptic.tasks.common.flops import forward_flops
from deepskeptic.tasks.common.judge import Judge, RealReference, frechet_distance

FIXED_NOISE_SEED = 1234  # the noise of the per-epoch grids (and of the report's final grid)
FD_NOISE_SEED = 4321     # the noise of the per-epoch FD: the same every epoch, so epochs compare


@torch.no_grad()
def sample(generator: nn.Module, n: int, latent_dim: int, seed: int, device: torch.device,
           batch_size: int = 500) -> torch.Tensor:
    """``n`` generated images (n, C, S, S) uint8 from noise of a fixed seed, generator in eval mode."""
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    was_training = generator.training
    generator.eval()
    out = [to_uint8(generator(z[i:i + batch_size].to(device))) for i in range(0, n, batch_size)]
    generator.train(was_training)
    return torch.cat(out)


class GanJob(Job):
    unit = "img"

    def __init__(self, gan: nn.Module, x_train: torch.Tensor, settings: dict[str, Any], device: torch.device,
                 judge: Judge | None = None, reference: RealReference | None = None):
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
        self.fixed_noise = torch.randn(64, self.latent_dim,
                                       generator=torch.Generator().manual_seed(FIXED_NOISE_SEED)).to(device)
        self.step = 0
        self.g_loss = torch.zeros((), device=device)     # the last generator loss (carried when d_steps > 1)

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
        real = to_float(self.x_train[index])                                 # (B, C, S, S) in [-1, 1]
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
        if self.run_path is not None:
            self.generator.eval()
            with torch.no_grad():
                images = to_uint8(self.generator(self.fixed_noise))
            self.generator.train()
            save_png(self.run_path / "samples" / f"epoch-{epoch:03d}.png", images)
        if self.judge is None or self.reference is None:
            return {}
        fake = sample(self.generator, len(self.reference.heldout), self.latent_dim, FD_NOISE_SEED, self.device)
        features, _ = self.judge.outputs(fake)
        return {"fd": frechet_distance(features, self.reference.heldout_features)}

    def extra_state(self) -> dict[str, Any]:
        return {"step": self.step, "streak": self.guard.streak, "g_loss": self.g_loss}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.guard.streak, self.g_loss = state["streak"].to(self.device), state["g_loss"].to(self.device)


def flops_per_example(gan: nn.Module, latent_dim: int) -> int:
    """Forward FLOPs to generate one image and score it once (a multiply-add counts 2)."""
    return forward_flops(nn.Sequential(gan.generator, gan.discriminator), torch.zeros(1, latent_dim))
