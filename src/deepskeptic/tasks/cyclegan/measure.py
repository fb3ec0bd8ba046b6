"""Measures of cyclegan runs, on held-out images of each domain: the share of translations the
domain judge recognises as the target domain, the cycle reconstruction error (mean absolute pixel
error, 0..1), and the FD between translations and held-out target images (with the target domain's
own floor). After each epoch on a few images (``epoch_evaluator``), after training on more.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepskeptic.tasks.common.adversarial import save_png, to_float, to_uint8
from deepskeptic.tasks.common.judge import frechet_distance
from deepskeptic.tasks.cyclegan.data import PairData, Prepared

EPOCH_SAMPLES = 200  # held-out images per domain measured after each epoch (the final measure uses more)


@torch.no_grad()
def translate_images(generator: nn.Module, x_uint8: torch.Tensor, device: torch.device,
                     batch_size: int = 64) -> torch.Tensor:
    """uint8 (N, C, S, S) -> translated uint8 (N, C, S, S), generator in eval mode."""
    was = generator.training
    generator.eval()
    out = [to_uint8(generator(to_float(x_uint8[i:i + batch_size].to(device))))
           for i in range(0, len(x_uint8), batch_size)]
    generator.train(was)
    return torch.cat(out) if out else x_uint8[:0]


def measure(g_ab: nn.Module, g_ba: nn.Module, prepared: Prepared, n: int, device: torch.device) -> dict[str, Any]:
    """Target share, FD to the target domain and cycle error, per direction and their mean."""
    pair, judge = prepared.pair, prepared.judge.to(device)
    out: dict[str, Any] = {}
    directions = (("a2b", pair.a_test, g_ab, g_ba, prepared.reference_b, pair.names[1]),
                  ("b2a", pair.b_test, g_ba, g_ab, prepared.reference_a, pair.names[0]))
    for tag, source, forward, back, reference, target in directions:
        x = source[:n]
        fake = translate_images(forward, x, device)
        rec = translate_images(back, fake, device)
        features, logits = judge.outputs(fake)
        out[f"target_share_{tag}"] = (logits.argmax(1) == judge.classes.index(target)).double().mean().item()
        out[f"fd_{tag}"] = frechet_distance(features, reference.heldout_features)
        out[f"fd_floor_{tag}"] = reference.floor["fd_floor"]
        out[f"cycle_error_{tag}"] = (rec.float() - x.float()).abs().mean().item() / 255
    for key in ("target_share", "fd", "fd_floor", "cycle_error"):
        out[key] = (out[f"{key}_a2b"] + out[f"{key}_b2a"]) / 2
    out["eval_samples"] = min(n, len(pair.a_test), len(pair.b_test))
    return out


def triplets(g_ab: nn.Module, g_ba: nn.Module, pair: PairData, device: torch.device, k: int = 8) -> torch.Tensor:
    """(6k, C, S, S) uint8, rows: A, A->B, A->B->A, B, B->A, B->A->B for the first k held-out images."""
    k = min(k, len(pair.a_test), len(pair.b_test))
    a, b = pair.a_test[:k], pair.b_test[:k]
    ab, ba = translate_images(g_ab, a, device), translate_images(g_ba, b, device)
    return torch.cat([a, ab, translate_images(g_ba, ab, device), b, ba, translate_images(g_ab, ba, device)])


def save_triplets(path: Path, g_ab: nn.Module, g_ba: nn.Module, pair: PairData, device: torch.device) -> None:
    images = triplets(g_ab, g_ba, pair, device)
    save_png(path, images, cols=len(images) // 6)


def epoch_evaluator(prepared: Prepared, device: torch.device):
    """After each epoch: RUN/samples/epoch-NNN.png and the mean measures on a few held-out images."""
    def evaluate(job, epoch: int) -> dict[str, float]:
        if job.run_path is not None:
            save_triplets(job.run_path / "samples" / f"epoch-{epoch:03d}.png", job.g_ab, job.g_ba, prepared.pair, device)
        m = measure(job.g_ab, job.g_ba, prepared, EPOCH_SAMPLES, device)
        return {k: m[k] for k in ("target_share", "fd", "cycle_error")}
    return evaluate
