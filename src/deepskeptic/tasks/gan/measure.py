"""The final measures of a trained generator (after training and for `deepskeptic evaluate`)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from deepskeptic.models import registry
from deepskeptic.tasks.common import judge as judging
from deepskeptic.tasks.gan.data import Prepared
from deepskeptic.tasks.gan.jobs import sample


def measure_run(generator: nn.Module, latent_dim: int, prepared: Prepared, seed: int, device: torch.device,
                write_pictures: Callable[[torch.Tensor], None] | None = None) -> dict[str, Any]:
    """FD and its floor, precision, recall, classes and memorisation of ``generator`` against the
    held-out images; ``write_pictures(fake)`` gets the generated images measured."""
    ref, judge = prepared.reference, prepared.judge.to(device)
    fake = sample(generator, len(ref.heldout), latent_dim, seed + 1, device)
    metrics = {**judging.measure(judge, fake, ref), **ref.floor}
    metrics["fd_ratio"] = metrics["fd"] / max(1e-12, metrics["fd_floor"])
    m = min(200, len(fake), len(ref.heldout))   # memorisation: pixel distance to the nearest training image
    _, d_fake = judging.nearest(fake[:m], prepared.data.x_train)
    _, d_real = judging.nearest(ref.heldout[:m], prepared.data.x_train)
    metrics.update(nearest_train_distance=d_fake.median().item(), heldout_nearest_train_distance=d_real.median().item(),
                   memorisation_ratio=d_fake.median().item() / max(1e-12, d_real.median().item()),
                   fd_samples=len(fake),   # the metric's name from before the setting became eval_samples
                   judge=judge.run_path, judge_test_accuracy=judge.test_accuracy,
                   g_params=registry.count_params(generator))
    if write_pictures is not None:
        write_pictures(fake)
    return metrics
