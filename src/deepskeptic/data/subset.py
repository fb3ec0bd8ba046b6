"""The one fixed subset draw: the same examples for every seed and every run."""
from __future__ import annotations

import torch


def fixed_subset(n: int, limit: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of at most ``limit`` of ``n`` examples, drawn once from a generator seeded with
    ``seed`` (so a --limit never depends on the model's seed); all of them, in order, when
    ``limit`` is None or not smaller than ``n``."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
