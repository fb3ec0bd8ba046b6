"""The textgen task's exported graph: one step of the character language model with its recurrent
state in and out, so that a client can sample (or score) text a step at a time."""
from __future__ import annotations

import torch
from torch import nn

from deepskeptic.export import Graph
from deepskeptic.runs import Run
from deepskeptic.tasks.textgen.data import load_vocab

STREAMS, STEPS = 4, 16   # real test text the export is checked on: 4 streams, each from the state the
                         # 16 characters before it leave


class LMStep(nn.Module):
    """(ids (B, T) int64, state) -> (logits (B, T, vocab), new state); the state is h (layers, B,
    hidden), and c too for the LSTM, as CharLM carries them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        logits, new = self.model(ids, (h,) if c is None else (h, c))   # (B, T, V), ((layers, B, H), ...)
        return (logits, *new)


def graphs(task, run: Run) -> list[Graph]:
    model = task.load_models(run, torch.device("cpu"))["model"]
    vocab = load_vocab(run)
    cfg = model.cfg
    lstm = model.cell == "lstm"
    test = vocab.encode(task.prepare(dict(run.config["settings"])).corpus.test)   # (N,) the run's test text
    span = 2 * STEPS
    streams = max(2, min(STREAMS, len(test) // span))
    if len(test) < streams * span:                                  # a very short test text, repeated
        test = test.repeat(streams * span // len(test) + 1)
    text = test[:streams * span].view(streams, span)                # (streams, 2 * STEPS)
    with torch.no_grad():
        _, state = model(text[:, :STEPS], None)                     # a real state, not zeros
    # the example is one sampling step, ids (streams, 1): the time axis is dynamic in ONNX (checked at
    # 5 and 16 steps) but torch.export fixes an LSTM's at the example's length, which then is the step
    ids = text[:, STEPS:STEPS + 1].contiguous()                      # (streams, 1)
    state_names = ["h", "c"] if lstm else ["h"]
    state_shape = ["layers", "batch", "hidden"]
    dynamic = {"ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"},
               **{n: {1: "batch"} for n in state_names}, **{f"{n}_out": {1: "batch"} for n in state_names}}
    sidecar = {
        "vocabulary": {"ids": {ch: i for i, ch in enumerate(vocab.itos) if i >= len(vocab.specials)},
                       "unknown_id": vocab.unk, "size": len(vocab), "itos": vocab.itos},
        "cell": model.cell, "layers": cfg.layers, "hidden": cfg.hidden,
        "state": {n: {"shape": [cfg.layers, "batch", cfg.hidden], "axes": state_shape} for n in state_names},
        "input": (f"ids (B, T) int64 (T is 1 in a torch.export program: one step): characters as "
                  f"'vocabulary.ids' numbers them ({vocab.unk} for any other); {' and '.join(state_names)} "
                  f"({cfg.layers}, B, {cfg.hidden}) float32: the state, zeros to start"),
        "output": (f"logits (B, T, {len(vocab)}) float32 over the next character after each input one; "
                   f"{', '.join(n + '_out' for n in state_names)}: the state after the last input character"),
        "sampling": (f"start with zero state(s) and feed the prime text's ids (or a newline) as (1, T) (one "
                     f"at a time to a torch.export program); take "
                     f"logits[:, -1], set the unknown id {vocab.unk} to -inf (never emitted), divide by a "
                     f"temperature (0.8), softmax, draw the next id; feed it as (1, 1) with the returned state "
                     f"and repeat. 'vocabulary.itos' turns ids back into characters"),
    }
    checks = [(text[:, STEPS:STEPS + 5].contiguous(), *state), (text[:, STEPS:].contiguous(), *state)]
    return [Graph(name="step", module=LMStep(model).eval(), inputs=(ids, *state), checks=checks,
                  input_names=["ids", *state_names], output_names=["logits", *(f"{n}_out" for n in state_names)],
                  dynamic=dynamic, sidecar=sidecar,
                  description=f"character ids and the {model.cell.upper()} state -> next-character logits and "
                              f"the new state")]
