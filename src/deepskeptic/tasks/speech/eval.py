"""Running a speech model over utterances and scoring it: accuracy, WER, CER, per voice, FLOPs.

Metric functions return bare names (``wer``, ``loss``); the engine adds ``val_`` and the test
metrics get ``test_`` here, in ``test_metrics``."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from deepskeptic.tasks.common.classification import classification_metrics
from deepskeptic.tasks.common.flops import forward_flops
from deepskeptic.tasks.common.metrics import prefixed
from deepskeptic.tasks.speech.text import beam_decode, encode, error_counts, greedy_decode, normalise


@torch.no_grad()
def outputs(model: nn.Module, feats: list[torch.Tensor], device: torch.device, batch_size: int = 64) -> list[Any]:
    """Model outputs per utterance, in input order, in eval mode: a (classes,) logit vector for
    classifiers, a (T', vocab) log-probability table for CTC models."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))  # similar lengths together
    result: list[Any] = [None] * len(feats)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        x = pad_sequence([feats[i] for i in chunk], batch_first=True).to(device)     # (B, T, F)
        lengths = torch.tensor([len(feats[i]) for i in chunk], device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x, lengths)
        if isinstance(out, tuple):
            log_probs, out_lengths = out[0].float().cpu(), out[1].cpu()
            for k, i in enumerate(chunk):
                result[i] = log_probs[k, :int(out_lengths[k])]
        else:
            for k, i in enumerate(chunk):
                result[i] = out[k].float().cpu()
    model.train(was_training)
    return result


def _ctc_loss(tables: list[torch.Tensor], transcripts: list[str]) -> float:
    losses = []
    for table, text in zip(tables, transcripts):
        target = torch.tensor(encode(text))
        losses.append(F.ctc_loss(table[:, None], target[None], torch.tensor([len(table)]), torch.tensor([len(target)]),
                                 blank=0, reduction="mean", zero_infinity=True).item())
    return float(np.mean(losses)) if losses else float("nan")


def decode(out: list[Any], labels: list[str] | None, beam: int) -> list[dict[str, Any]]:
    """Per utterance: hypothesis, confidence (and greedy hypothesis for CTC; top classes for classifiers)."""
    rows = []
    for o in out:
        if labels is not None:
            probs = o.softmax(-1)
            top = probs.topk(min(3, len(labels)))
            rows.append({"hypothesis": labels[int(top.indices[0])], "confidence": float(top.values[0]),
                         "top": [[labels[int(c)], round(float(p), 5)] for p, c in zip(top.values, top.indices)]})
        else:
            greedy = greedy_decode(o)
            if beam > 0:
                text, confidence = beam_decode(o, beam=beam)
            else:
                text, confidence = greedy, float(o.max(-1).values.mean().exp())  # mean per-frame best probability
            rows.append({"hypothesis": text, "confidence": confidence, "greedy": greedy})
    return rows


def score(model: nn.Module, data, index: torch.Tensor, device: torch.device, labels: list[str] | None,
          beam: int) -> dict[str, Any]:
    """Scalar metrics of utterances ``index`` of ``data``, bare names (see ``metrics_from``)."""
    return metrics_from(*_run(model, data, index, device, labels, beam), labels)[0]


def _run(model, data, index, device, labels, beam):
    idx = index.tolist()
    out = outputs(model, [data.utterance(i) for i in idx], device)
    refs = [data.transcripts[i] for i in idx]
    return out, refs, decode(out, labels, beam), [data.speakers[i] for i in idx], [data.paths[i] for i in idx]


def metrics_from(out, refs, rows, speakers, paths, labels) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics with bare names: wer, cer, accuracy, loss and, for CTC, wer_greedy and cer_greedy;
    per-utterance predictions) from model outputs and decoded rows."""
    counts = [error_counts(r, row["hypothesis"]) for r, row in zip(refs, rows)]
    words, chars = max(1, sum(c[1] for c in counts)), max(1, sum(c[3] for c in counts))
    metrics: dict[str, Any] = {
        "wer": sum(c[0] for c in counts) / words,
        "cer": sum(c[2] for c in counts) / chars,
        # classifiers: word accuracy; CTC: share of utterances transcribed without any error
        "accuracy": float(np.mean([normalise(r) == normalise(row["hypothesis"]) for r, row in zip(refs, rows)])),
    }
    if labels is not None:
        lookup = {w: k for k, w in enumerate(labels)}
        y = torch.tensor([lookup.get(r, -100) for r in refs])
        logits = torch.stack(out)
        metrics["loss"] = F.cross_entropy(logits, y).item()
    else:
        greedy = [error_counts(r, row["greedy"]) for r, row in zip(refs, rows)]
        metrics["wer_greedy"] = sum(c[0] for c in greedy) / words
        metrics["cer_greedy"] = sum(c[2] for c in greedy) / chars
        metrics["loss"] = _ctc_loss(out, refs)
    predictions = [{"path": p, "speaker": s, "reference": r, **row, "word_errors": c[0], "words": c[1]}
                   for p, s, r, row, c in zip(paths, speakers, refs, rows, counts)]
    return metrics, predictions


def per_voice(predictions: list[dict[str, Any]]) -> dict[str, float]:
    """Word error rate per speaker ('' speakers left out), sorted by speaker name."""
    edits: dict[str, list[int]] = {}
    for p in predictions:
        if p["speaker"]:
            e = edits.setdefault(p["speaker"], [0, 0])
            e[0] += p["word_errors"]
            e[1] += p["words"]
    return {s: e[0] / max(1, e[1]) for s, e in sorted(edits.items())}


def test_metrics(model: nn.Module, data, device: torch.device, labels: list[str] | None,
                 beam: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Everything metrics.json records about the test split (``test_`` names; tables keep theirs),
    and the per-utterance predictions."""
    out, refs, rows, speakers, paths = _run(model, data, data.splits["test"], device, labels, beam)
    scores, predictions = metrics_from(out, refs, rows, speakers, paths, labels)
    scores["utterances"] = len(refs)
    metrics = prefixed(scores, "test")
    voices = per_voice(predictions)
    if voices:
        metrics["test_voices"] = len(voices)
        metrics["test_wer_per_voice"] = voices
    if labels is not None:
        lookup = {w: k for k, w in enumerate(labels)}
        tables = classification_metrics(torch.stack(out), torch.tensor([lookup[r] for r in refs]), labels)
        metrics["per_class_accuracy"] = tables["per_class_accuracy"]
        metrics["confusion_matrix"] = tables["confusion_matrix"]
    return metrics, predictions


def flops_per_second_of_audio(model: nn.Module, n_mels: int) -> int:
    """Forward FLOPs for one second of audio (100 frames), a multiply-add counting 2.

    torch's FLOP counter sees linear and conv layers but not nn.LSTM, whose matrix products are
    added here: per step, layer and direction 2 * 4H * (input + H).
    """
    steps: list[int] = []

    def hook(module, inputs, _output):
        x = inputs[0]
        steps.append(x.data.shape[0] if hasattr(x, "batch_sizes") else x.shape[-2])

    lstms = [m for m in model.modules() if isinstance(m, nn.LSTM)]
    handles = [m.register_forward_hook(hook) for m in lstms]
    try:
        total = forward_flops(model, torch.zeros(1, 100, n_mels), torch.tensor([100]))
    finally:
        for h in handles:
            h.remove()
    for lstm, t in zip(lstms, steps):
        dirs = 2 if lstm.bidirectional else 1
        for layer in range(lstm.num_layers):
            width = lstm.input_size if layer == 0 else dirs * lstm.hidden_size
            total += t * dirs * 2 * 4 * lstm.hidden_size * (width + lstm.hidden_size)
    return total
