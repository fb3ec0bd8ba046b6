"""The text classifier's lstm: documents per second of training steps and of validation, the path
before packing (every batch padded to its longest document, validation in the documents' order)
against the packed path (TextJob's default ``bucketing``), in one process, one thread, interleaved
step by step on the same batches of the same documents.

    .venv/bin/python benchmarks/text_lstm_speed.py                       # fortunes-categories, 24 batches
    .venv/bin/python benchmarks/text_lstm_speed.py --batches 48 --val-docs 1024
    .venv/bin/python benchmarks/text_lstm_speed.py --levers               # + what recipe changes would buy

Training batches are the engine's (TextJob.epoch_batches, seed 0): the same documents for both
paths; each path trains its own copy of the same initial model. ``--levers`` also times, on the
packed path, recipe changes this benchmark does not make the default (issue 17 part 1 decides
them): hidden 128, batches of 128 documents, max_len 256 (their own batches from the same seed;
documents/s and characters/s both shown, since their documents differ). Timings on a shared
machine move with its load; the ratio of interleaved paths is the number to read.

Measured (2-core AMD EPYC, AVX2, shared with other work: load 4-9; fortunes-categories, hidden 256,
batches of 64): training 66.8 -> 70.2 documents/s (1.05x), validation 53.5 -> 203.9 (3.8x). The
training step is ~85 % oneDNN's LSTM forward and backward, at about half this core's measured
matrix-multiply rate (a packed LSTM written in PyTorch operations, the per-step work only for the
documents still running, was slower: 40 against 51 documents/s); the batches were already sorted by length within chunks (3 % padding), so packing had little
left to remove there, while validation's batches in the documents' order were ~70 % padding.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from deepskeptic.engine import StepContext  # noqa: E402
from deepskeptic.models.text import time_segments  # noqa: E402
from deepskeptic.tasks import get_task  # noqa: E402
from deepskeptic.tasks.text.data import predict_logits  # noqa: E402
from deepskeptic.tasks.text.jobs import TextJob  # noqa: E402
from deepskeptic.training import resolve_settings  # noqa: E402


def build(task, data: str, flags: dict, prepared=None, bucketing: bool = True):
    settings = resolve_settings(task, {"model": "lstm", "data": data, **flags}, None)
    torch.manual_seed(0)
    prepared = prepared or task.prepare(settings)
    job, _ = task.build(settings, prepared, torch.device("cpu"))
    if not bucketing:
        job = TextJob(job.model, prepared, "chars", settings, torch.device("cpu"), bucketing=False)
    return job, prepared


def computed_steps(job: TextJob, index: torch.Tensor) -> tuple[int, int]:
    """(document-steps computed, document-steps that are real characters) for one batch."""
    lengths = sorted(job.train.lengths[index].tolist(), reverse=True)
    real = sum(lengths)
    if not job.bucketing:
        return len(lengths) * lengths[0], real
    steps, start = 0, 0
    for end in time_segments(lengths):
        steps += sum(1 for n in lengths if n > start) * (end - start)
        start = end
    return steps, real


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fortunes-categories")
    parser.add_argument("--batches", type=int, default=24, help="training steps timed per path (24)")
    parser.add_argument("--val-docs", type=int, default=768, help="validation documents timed per path (768)")
    parser.add_argument("--levers", action="store_true", help="also time recipe changes on the packed path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_task("text")
    new, prepared = build(task, args.data, {})
    old, _ = build(task, args.data, {}, prepared, bucketing=False)   # the same initial weights (seed 0)
    paths = {"padded (before)": old, "packed (now)": new}
    if args.levers:
        paths["packed, hidden 128"] = build(task, args.data, {"model_config": {"hidden": 128}}, prepared)[0]
        paths["packed, batch 128"] = build(task, args.data, {"batch_size": 128}, prepared)[0]
        paths["packed, max_len 256"] = build(task, args.data, {"max_len": 256})[0]
    batches = {name: job.epoch_batches(0, torch.Generator().manual_seed(0)) for name, job in paths.items()}
    base_docs = sum(len(b) for b in batches["packed (now)"][:args.batches])
    for name, job in paths.items():   # the levers: as many documents as the two paths time
        if name not in ("padded (before)", "packed (now)"):
            kept, count = [], 0
            for b in batches[name]:
                if count >= base_docs:
                    break
                kept.append(b)
                count += len(b)
            batches[name] = kept
        else:
            batches[name] = batches[name][:args.batches]
    ctxs = {name: StepContext(torch.device("cpu"), job.optimizers, False, False) for name, job in paths.items()}
    seconds = {name: 0.0 for name in paths}
    docs = {name: 0 for name in paths}
    chars = {name: 0 for name in paths}
    steps = {name: [0, 0] for name in paths}
    names = list(paths)
    rounds = max(len(b) for b in batches.values())
    print(f"{args.data}: timing {args.batches} training steps per path, one thread, interleaved ...",
          file=sys.stderr, flush=True)
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):   # alternate who goes first
            if i >= len(batches[name]):
                continue
            job, index = paths[name], batches[name][i]
            for m in job.modules.values():
                m.train()
            start = time.perf_counter()
            count, _ = job.train_step(index, ctxs[name])
            seconds[name] += time.perf_counter() - start
            docs[name] += count
            chars[name] += int(job.train.lengths[index].sum())
            computed, real = computed_steps(job, index)
            steps[name][0] += computed
            steps[name][1] += real
    # validation: the same documents, both paths' models (the packed one's weights copied into the
    # padded one's, so the logits can be compared)
    old.model.load_state_dict(new.model.state_dict())
    val = new.val
    sub = torch.arange(min(args.val_docs, len(val)))

    class Subset:
        lengths = val.lengths[sub]

        def __len__(self):
            return len(sub)

        def batch(self, index, device):
            return val.batch(sub[index], device)

    val_seconds, logits = {}, {}
    for name, job in (("packed (now)", new), ("padded (before)", old), ("packed (now)", new), ("padded (before)", old)):
        start = time.perf_counter()
        logits[name] = predict_logits(job.model, Subset(), torch.device("cpu"), bucketing=job.bucketing)
        val_seconds[name] = val_seconds.get(name, 0.0) + time.perf_counter() - start
    diff = (logits["packed (now)"] - logits["padded (before)"]).abs().max().item()

    base = docs["padded (before)"] / seconds["padded (before)"]
    val_base = 2 * len(sub) / val_seconds["padded (before)"]
    print(f"\n{'path':<22} {'train docs/s':>12} {'x':>6} {'chars/s':>8} {'computed/real steps':>20} "
          f"{'validate docs/s':>16} {'x':>6}")
    for name in paths:
        rate = docs[name] / seconds[name]
        row = (f"{name:<22} {rate:>12.1f} {rate / base:>6.2f} {chars[name] / seconds[name]:>8.0f} "
               f"{steps[name][0] / steps[name][1]:>20.3f}")
        if name in val_seconds:
            v = 2 * len(sub) / val_seconds[name]
            row += f" {v:>16.1f} {v / val_base:>6.2f}"
        print(row)
    print(f"\n{docs['packed (now)']} training documents per path ({args.batches} steps of up to "
          f"{new.batch_size}), {len(sub)} validation documents twice; validation logits, packed vs "
          f"padded: max |difference| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
