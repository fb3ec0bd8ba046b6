"""Image classifiers: the softmax floor, the plain network, a small CNN and AlexNet.

Every builder takes a config with the input shape (channels, image_size, num_classes) and returns a
module mapping (B, C, H, W) float images to (B, num_classes) logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepskeptic.models.registry import register


@dataclass
class LogRegConfig:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10


@register("image", "logreg", LogRegConfig, role="baseline", reads="pixels",
          description="softmax regression on pixels: the floor every network must beat",
          train_defaults={"lr": 5e-3, "weight_decay": 1e-4, "batch_size": 256, "augment": False})
def build_logreg(cfg: LogRegConfig) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(cfg.in_channels * cfg.image_size ** 2, cfg.num_classes))


@dataclass
class MLPConfig:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    hidden: tuple[int, ...] = (512, 512)  # two hidden layers: the classic plain network
    dropout: float = 0.2                  # per hidden layer; light, budgets here are short


@register("image", "mlp", MLPConfig, role="baseline", reads="pixels",
          description="the plain network: fully connected hidden layers, ReLU, dropout",
          train_defaults={"lr": 2e-3, "weight_decay": 1e-4, "batch_size": 256, "augment": False})
def build_mlp(cfg: MLPConfig) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = cfg.in_channels * cfg.image_size ** 2
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, cfg.num_classes))
    return nn.Sequential(*layers)


@dataclass
class CNNConfig:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    # Channels per stage; each stage is conv3x3-BN-ReLU then 2x2 max pooling. Three narrow stages
    # are what two CPU cores push through Fashion-MNIST 12 times a minute: on a 60 s budget that
    # beat (24, 48, 96) and (32, 64, 128), which get through 5 and 3 epochs (BENCHMARKS.md).
    widths: tuple[int, ...] = (16, 32, 64)
    hidden: int = 128     # fully connected layer of the head
    dropout: float = 0.2  # before each fully connected layer


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


@register("image", "cnn", CNNConfig, role="deep", reads="pixels",
          description="conv+BN+ReLU stages with max pooling, dropout, fully connected head",
          # No augmentation by default: on budgets of a dozen epochs random shifts cost more accuracy
          # than they protect (-1.4 points on Fashion-MNIST in 60 s); turn on with --augment for long runs.
          train_defaults={"lr": 8e-3, "weight_decay": 5e-4, "batch_size": 256, "augment": False})
def build_cnn(cfg: CNNConfig) -> nn.Module:
    if cfg.image_size < 2 ** len(cfg.widths):
        raise ValueError(f"cnn with {len(cfg.widths)} pooling stages needs images of at least "
                         f"{2 ** len(cfg.widths)} pixels")
    layers: list[nn.Module] = []
    c_in, size = cfg.in_channels, cfg.image_size
    for width in cfg.widths:
        layers += [_conv_bn_relu(c_in, width), nn.MaxPool2d(2)]  # (B, width, size/2, size/2)
        c_in, size = width, size // 2
    layers += [nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(c_in * size * size, cfg.hidden),
               nn.ReLU(inplace=True), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.num_classes)]
    return nn.Sequential(*layers)


@dataclass
class AlexNetConfig:
    in_channels: int = 3
    image_size: int = 224
    num_classes: int = 1000
    # 'auto' picks 'original' (Krizhevsky et al. 2012, for images of 64 px and more) or 'small'
    # (the same layer plan scaled to small images: 3x3 first conv, stride 1, widths / 4).
    variant: str = "auto"
    dropout: float = 0.5  # as in the paper, before the first two fully connected layers


ALEXNET_VARIANTS = {
    # conv1 (kernel, stride, padding), widths of the five conv layers, pooling, fc width, min size
    "original": dict(conv1=(11, 4, 2), widths=(96, 256, 384, 384, 256), pool=(3, 2), fc=4096, min_size=63),
    "small": dict(conv1=(3, 1, 1), widths=(24, 64, 96, 96, 64), pool=(2, 2), fc=512, min_size=8),
}


def alexnet_variant(cfg: AlexNetConfig) -> str:
    if cfg.variant != "auto":
        return cfg.variant
    return "original" if cfg.image_size >= 64 else "small"


@register("image", "alexnet", AlexNetConfig, role="deep", reads="pixels",
          description="the 2012 design: 5 conv layers, pooling after 1st/2nd/5th, 3 FC layers with dropout",
          train_defaults={"lr": 2e-3, "weight_decay": 5e-4, "batch_size": 128, "augment": True})
def build_alexnet(cfg: AlexNetConfig) -> nn.Module:
    variant = alexnet_variant(cfg)
    if variant not in ALEXNET_VARIANTS:
        raise ValueError(f"unknown AlexNet variant {variant!r}; valid: auto, {', '.join(ALEXNET_VARIANTS)}")
    v = ALEXNET_VARIANTS[variant]
    if cfg.image_size < v["min_size"]:
        raise ValueError(f"alexnet ({variant}) needs images of at least {v['min_size']} pixels")
    k, s, p = v["conv1"]
    w1, w2, w3, w4, w5 = v["widths"]
    pool_k, pool_s = v["pool"]
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    features = nn.Sequential(
        nn.Conv2d(cfg.in_channels, w1, k, stride=s, padding=p), relu(), nn.MaxPool2d(pool_k, pool_s),
        nn.Conv2d(w1, w2, 5, padding=2), relu(), nn.MaxPool2d(pool_k, pool_s),
        nn.Conv2d(w2, w3, 3, padding=1), relu(),
        nn.Conv2d(w3, w4, 3, padding=1), relu(),
        nn.Conv2d(w4, w5, 3, padding=1), relu(), nn.MaxPool2d(pool_k, pool_s),
    )
    with torch.no_grad():  # spatial size after the features, for the first FC layer
        out = features(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size))
    side = min(out.shape[-1], 6)  # the paper's 6x6 grid; smaller grids stay as they are
    fc = v["fc"]
    return nn.Sequential(
        features, nn.AdaptiveAvgPool2d(side), nn.Flatten(),   # (B, w5 * side * side)
        nn.Dropout(cfg.dropout), nn.Linear(w5 * side * side, fc), relu(),
        nn.Dropout(cfg.dropout), nn.Linear(fc, fc), relu(),
        nn.Linear(fc, cfg.num_classes),
    )
