"""The one optimizer rule of every network (nanoGPT's ``configure_optimizers``)."""
from __future__ import annotations

import torch
from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: matrices and kernels (``dim() >= 2``) decay; biases, norm scales
    and embedding tables do not (shrinking a rare character's vector towards zero only hurts)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, rest = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 and id(p) not in embeddings else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def adamw(model: nn.Module, lr: float, weight_decay: float, **kwargs) -> torch.optim.AdamW:
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr, **kwargs)
