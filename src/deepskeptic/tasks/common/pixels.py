"""Pixel statistics of uint8 images, the normalisation of every network that reads pixels."""
from __future__ import annotations

import torch


def channel_stats(x_uint8: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of (N, C, H, W) uint8 images, in [0, 1] units (the
    std floored at 1e-6 so that a constant channel does not divide by zero)."""
    channels = x_uint8.shape[1]
    pixels = x_uint8.float().div(255).transpose(0, 1).reshape(channels, -1)   # (C, N*H*W)
    return pixels.mean(1).tolist(), pixels.std(1).clamp_min(1e-6).tolist()


def normalise(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 -> float, standardised per channel with the training statistics."""
    return (x_uint8.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
