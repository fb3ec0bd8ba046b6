"""Generative adversarial networks: DCGAN and the fully connected GAN (task `gan`), CycleGAN and the
identity mapping it must beat (task `cyclegan`).

Images are (B, C, S, S) floats in [-1, 1]; noise z is (B, latent_dim) from N(0, I); a discriminator
returns raw scores (logits), one per image (B,) or one per patch (B, 1, h, w). Each builder returns
a container module holding the networks as attributes; the task gives each its own optimizer.
Paper names -> code names (CycleGAN, Zhu et al. 2017): G: X->Y is ``g_ab``, F: Y->X is ``g_ba``,
D_Y is ``d_b``, D_X is ``d_a``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from deepskeptic.models.registry import register

DCGAN_SIZES = (8, 16, 28, 32, 64, 128)  # 4 * 2^k or 7 * 2^k: the sizes stride-2 transposed convs reach


class GAN(nn.Module):
    """A generator and a discriminator; ``forward(z)`` generates."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)


def _init_normal(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0: the DCGAN and CycleGAN papers' init."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------- DCGAN

@dataclass
class DCGANConfig:
    channels: int = 1
    image_size: int = 28
    latent_dim: int = 100  # length of z, as in Radford et al. 2016
    # 0 means sized from image_size (resolve_dcgan_config): 64 at >= 64 px as in the paper, 32 below,
    # which costs a quarter of the FLOPs and, on Fashion-MNIST, reached the same FD per image seen.
    g_width: int = 0       # generator channels before its output layer (ngf); doubled per stage upwards
    d_width: int = 0       # discriminator channels after its first layer (ndf); doubled per stage


def resolve_dcgan_config(cfg: DCGANConfig) -> DCGANConfig:
    """Replace the 0 ('auto') widths by the values used for cfg.image_size."""
    width = 64 if cfg.image_size >= 64 else 32
    return dataclasses.replace(cfg, g_width=cfg.g_width or width, d_width=cfg.d_width or width)


def dcgan_plan(size: int) -> tuple[int, int]:
    """(base, upsamplings): the generator starts at base x base and doubles ``upsamplings`` times."""
    if size not in DCGAN_SIZES:
        raise ValueError(f"dcgan makes images of {', '.join(map(str, DCGAN_SIZES))} px, not {size}")
    base = 7 if size % 7 == 0 else 4
    return base, (size // base).bit_length() - 1


class DCGANGenerator(nn.Module):
    """z (B, latent) -> (B, C, S, S) in [-1, 1]: transposed convs, batch norm, ReLU, tanh output."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        cfg = resolve_dcgan_config(cfg)
        base, ups = dcgan_plan(cfg.image_size)
        width = cfg.g_width * 2 ** (ups - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.latent_dim, width, base, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(True)]        # (B, width, base, base)
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),  # spatial x2
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, cfg.channels, 4, 2, 1), nn.Tanh()]  # (B, C, S, S)
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])                                     # (B, latent, 1, 1) in


class DCGANDiscriminator(nn.Module):
    """(B, C, S, S) -> (B,) logits: strided convs, batch norm (not on the first layer), LeakyReLU 0.2."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        cfg = resolve_dcgan_config(cfg)
        base, downs = dcgan_plan(cfg.image_size)
        width = cfg.d_width
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(downs - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),         # spatial / 2
                       nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        layers.append(nn.Conv2d(width, 1, base, 1, 0))                          # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


@register("gan", "dcgan", DCGANConfig, role="deep", reads="latent",
          description="transposed-conv generator (BN, ReLU) vs strided-conv discriminator (LeakyReLU)",
          train_defaults={"lr": 2e-4, "batch_size": 64, "warmup": 0.0, "schedule": "constant-linear"})
def build_dcgan(cfg: DCGANConfig) -> GAN:
    gan = GAN(DCGANGenerator(cfg), DCGANDiscriminator(cfg), cfg.latent_dim)
    _init_normal(gan)
    return gan


# ------------------------------------------------------------------------------------- MLP GAN

@dataclass
class MLPGANConfig:
    channels: int = 1
    image_size: int = 28
    latent_dim: int = 100
    g_hidden: tuple[int, ...] = (256, 512, 1024)  # generator layers, widening towards the pixels
    d_hidden: tuple[int, ...] = (512, 256)        # discriminator layers, narrowing towards the score


class MLPGenerator(nn.Module):
    """z (B, latent) -> (B, C, S, S): fully connected layers, LeakyReLU, batch norm after the first."""

    def __init__(self, cfg: MLPGANConfig):
        super().__init__()
        self.shape = (cfg.channels, cfg.image_size, cfg.image_size)
        layers: list[nn.Module] = []
        width = cfg.latent_dim
        for i, hidden in enumerate(cfg.g_hidden):
            layers += [nn.Linear(width, hidden)] + ([nn.BatchNorm1d(hidden)] if i else [])
            layers.append(nn.LeakyReLU(0.2, True))
            width = hidden
        layers += [nn.Linear(width, cfg.channels * cfg.image_size ** 2), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(len(z), *self.shape)                            # (B, C*S*S) -> (B, C, S, S)


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: MLPGANConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = cfg.channels * cfg.image_size ** 2
        for hidden in cfg.d_hidden:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2, True)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()                                            # (B,)


@register("gan", "mlp-gan", MLPGANConfig, role="baseline", reads="latent",
          description="the original fully connected GAN (Goodfellow et al. 2014): the plain network",
          train_defaults={"lr": 2e-4, "batch_size": 64, "warmup": 0.0, "schedule": "constant-linear"})
def build_mlp_gan(cfg: MLPGANConfig) -> GAN:
    gan = GAN(MLPGenerator(cfg), MLPDiscriminator(cfg), cfg.latent_dim)
    _init_normal(gan)
    return gan


# ------------------------------------------------------------------------------------- CycleGAN

@dataclass
class CycleGANConfig:
    channels: int = 3
    image_size: int = 256
    # 0 means sized from image_size (resolve_cyclegan_config): width 64 at >= 128 px as in the paper,
    # 32 at 64-127 px and 16 below (small images need fewer channels; two CPU cores get more steps).
    width: int = 0       # generator channels after the first 7x7 conv (ngf); x2 and x4 after downsampling
    blocks: int = 0      # ResNet blocks at the bottleneck: 9 at >= 256 px, 6 below (the paper)
    d_width: int = 0     # PatchGAN channels of its first layer (ndf); 0: 64 at >= 128 px, else width
    # PatchGAN stride-2 layers: 3 (70x70 patches, the paper) at >= 192 px, else 2 (34x34), 1 (16x16)
    # below 16 px. Small images keep 34 px patches: at 28 px they see the whole object, which a shape
    # change (sneaker -> ankle boot) needs; 16 px patches left half of the boots boots.
    d_layers: int = 0


def resolve_cyclegan_config(cfg: CycleGANConfig) -> CycleGANConfig:
    """Replace the 0 ('auto') fields by the values used for cfg.image_size."""
    s = cfg.image_size
    width = cfg.width or (64 if s >= 128 else 32 if s >= 64 else 16)
    return dataclasses.replace(
        cfg, width=width, blocks=cfg.blocks or (9 if s >= 256 else 6),
        d_width=cfg.d_width or (64 if s >= 128 else width),
        d_layers=cfg.d_layers or (3 if s >= 192 else 2 if s >= 16 else 1))


class ResnetBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, instance norm, ReLU, reflect-pad, 3x3 conv, instance norm)(x)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3), nn.InstanceNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """(B, C, S, S) -> (B, C, S, S) in [-1, 1]; S a multiple of 4. c7s1-w, d2w, d4w, R4w x blocks,
    u2w, uw, c7s1-C (Johnson et al. 2016, as used by CycleGAN)."""

    def __init__(self, channels: int, width: int, blocks: int):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7),
                                   nn.InstanceNorm2d(width), nn.ReLU(True)]     # (B, w, S, S)
        for mult in (1, 2):                                                     # (B, 4w, S/4, S/4) after
            layers += [nn.Conv2d(width * mult, width * mult * 2, 3, 2, 1),
                       nn.InstanceNorm2d(width * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(width * 4) for _ in range(blocks)]
        for mult in (4, 2):                                                     # back to (B, w, S, S)
            layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, 3, 2, 1, output_padding=1),
                       nn.InstanceNorm2d(width * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """(B, C, S, S) -> (B, 1, h, w): one real/fake score per overlapping patch (PatchGAN)."""

    def __init__(self, channels: int, width: int, layers_: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
        for i in range(1, layers_ + 1):
            stride = 2 if i < layers_ else 1                                    # last block keeps the size
            c_out = width * min(2 ** i, 8)
            layers += [nn.Conv2d(c, c_out, 4, stride, 1), nn.InstanceNorm2d(c_out), nn.LeakyReLU(0.2, True)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CycleGAN(nn.Module):
    """Two generators (A->B, B->A) and two patch discriminators; ``forward(a)`` translates A -> B."""

    def __init__(self, cfg: CycleGANConfig):
        super().__init__()
        cfg = resolve_cyclegan_config(cfg)
        if cfg.image_size % 4 or cfg.image_size < 8:
            raise ValueError(f"cyclegan makes images whose side is a multiple of 4 and at least 8 px "
                             f"(e.g. 28, 32, 64, 128, 256), not {cfg.image_size}")
        self.g_ab = ResnetGenerator(cfg.channels, cfg.width, cfg.blocks)
        self.g_ba = ResnetGenerator(cfg.channels, cfg.width, cfg.blocks)
        self.d_a = PatchDiscriminator(cfg.channels, cfg.d_width, cfg.d_layers)
        self.d_b = PatchDiscriminator(cfg.channels, cfg.d_width, cfg.d_layers)
        _init_normal(self)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.g_ab(a)


@register("cyclegan", "cyclegan", CycleGANConfig, role="deep", reads="pixels",
          description="ResNet generators, PatchGAN discriminators, LSGAN + cycle + identity losses",
          train_defaults={"lr": 2e-4, "batch_size": 8, "warmup": 0.0, "schedule": "constant-linear"})
def build_cyclegan(cfg: CycleGANConfig) -> CycleGAN:
    return CycleGAN(cfg)


@dataclass
class IdentityConfig:
    channels: int = 3
    image_size: int = 256


class IdentityTranslator(nn.Module):
    """Translation = the input unchanged. Nothing to train; the floor of every translator."""

    def __init__(self, cfg: IdentityConfig):
        super().__init__()
        self.g_ab = nn.Identity()
        self.g_ba = nn.Identity()

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a


@register("cyclegan", "identity", IdentityConfig, role="baseline", reads="pixels", one_step=True,
          description="the input unchanged: what a translator must beat (no training)",
          train_defaults={"batch_size": 8})
def build_identity(cfg: IdentityConfig) -> IdentityTranslator:
    return IdentityTranslator(cfg)
