"""A character language model at work: bits per character of a text, sampling, FLOPs per character."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from deepskeptic.models.text import CharLM

LN2 = math.log(2)


@torch.no_grad()
def stream_bpc(model: CharLM, ids: torch.Tensor, device: torch.device, streams: int = 64,
               chunk: int = 512) -> tuple[float, int]:
    """Bits per character of ids[1:] given everything before it, in eval mode.

    The text is cut into up to ``streams`` contiguous pieces read side by side (each carries its
    own state from its start), ``chunk`` characters at a time. Returns (bpc, characters scored).
    """
    was_training = model.training
    model.eval()
    x_all, y_all = ids[:-1], ids[1:]
    n = len(y_all)
    streams = max(1, min(streams, n // 256 or 1))
    length = n // streams
    total, count = 0.0, 0
    pieces = [(x_all[:streams * length].view(streams, length), y_all[:streams * length].view(streams, length))]
    if n - streams * length:                                  # the remainder as one more stream
        pieces.append((x_all[streams * length:][None], y_all[streams * length:][None]))
    for x, y in pieces:
        state = model.initial_state(x.shape[0], device)
        for start in range(0, x.shape[1], chunk):
            xb, yb = x[:, start:start + chunk].to(device).long(), y[:, start:start + chunk].to(device).long()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits, state = model(xb, state)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                     reduction="sum").item()
            count += yb.numel()
    model.train(was_training)
    return total / max(1, count) / LN2, count


@torch.no_grad()
def sample(model: CharLM, vocab, prime: str, length: int, *, temperature: float = 0.8, top_k: int = 0,
           generator: torch.Generator | None = None, on_char: Callable[[str], None] | None = None) -> str:
    """Generate ``length`` characters after ``prime`` (a newline when empty); returns them.

    temperature 0 picks the most likely character; top_k > 0 samples among the k most likely.
    The unknown symbol is never generated. ``on_char`` receives each character as it comes.
    """
    model.eval()
    device = next(model.parameters()).device
    ids = vocab.encode(prime or "\n").to(device)
    logits, state = model(ids[None], None)                         # (1, P, V): the prime sets the state
    last = logits[0, -1].float()
    out = []
    for _ in range(length):
        last[: vocab.unk + 1] = float("-inf")                      # padding / unknown: never emitted
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            scaled = last / temperature
            if 0 < top_k < len(scaled):
                kth = scaled.topk(top_k).values[-1]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            nxt = int(torch.multinomial(scaled.softmax(-1).cpu(), 1, generator=generator))
        ch = vocab.itos[nxt]
        out.append(ch)
        if on_char is not None:
            on_char(ch)
        logits, state = model(torch.tensor([[nxt]], device=device), state)
        last = logits[0, -1].float()
    return "".join(out)


def flops_per_char(model: CharLM) -> int:
    """Forward FLOPs per character (a multiply-add counts 2): the recurrent layers and the head.

    Counted from the shapes, because torch's FLOP counter does not see inside the fused nn.LSTM.
    """
    gates = 4 if model.cell == "lstm" else 1
    cfg = model.cfg
    width, flops = cfg.embed, 0
    for _ in range(cfg.layers):
        flops += 2 * gates * cfg.hidden * (width + cfg.hidden)
        width = cfg.hidden
    return flops + 2 * cfg.hidden * cfg.vocab_size
