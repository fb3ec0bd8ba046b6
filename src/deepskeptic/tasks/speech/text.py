"""Transcripts as CTC targets, CTC decoding (greedy and prefix beam search), WER and CER.

CTC (Graves et al. 2006) outputs, per frame, a distribution over the alphabet plus a *blank*.
A transcript is read off a frame-level path by merging repeated symbols and then dropping blanks:
``"hh_e_ll_llo"`` -> ``"hello"`` (``_`` the blank). Greedy decoding takes the most likely symbol at
every frame; prefix beam search keeps the ``beam`` most likely transcripts, each summing the
probability of every path that reads as it (blank-ending and non-blank-ending paths apart).
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from deepskeptic.errors import UserError

BLANK = 0
ALPHABET = " '" + "abcdefghijklmnopqrstuvwxyz"   # symbol k + 1 is ALPHABET[k]; 0 is the blank
SYMBOLS = {c: k + 1 for k, c in enumerate(ALPHABET)}
VOCAB_SIZE = len(ALPHABET) + 1


def normalise(transcript: str) -> str:
    """Lower case, single spaces: the form CTC models learn and errors are counted on."""
    return " ".join(transcript.lower().split())


def check_vocabulary(transcripts: list[str], origins: list[str]) -> None:
    """UserError naming the first transcript with a character CTC models cannot write."""
    for text, origin in zip(transcripts, origins):
        bad = sorted({c for c in normalise(text) if c not in SYMBOLS})
        if bad:
            raise UserError(f"{origin}: transcript '{text}' has character(s) {' '.join(repr(c) for c in bad)} outside "
                            f"the vocabulary (letters a-z, apostrophe, space): write numbers and symbols as words")


def encode(transcript: str) -> list[int]:
    return [SYMBOLS[c] for c in normalise(transcript)]


def decode_symbols(symbols: list[int]) -> str:
    return "".join(ALPHABET[s - 1] for s in symbols if s != BLANK)


def greedy_decode(log_probs: torch.Tensor, length: int | None = None) -> str:
    """(T, V) log-probabilities (or probabilities) of one utterance -> transcript."""
    best = log_probs[:length].argmax(-1).tolist()
    out, previous = [], BLANK
    for s in best:
        if s != previous and s != BLANK:
            out.append(s)
        previous = s
    return " ".join(decode_symbols(out).split())


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def beam_decode(log_probs: torch.Tensor, length: int | None = None, beam: int = 8,
                prune: float = -12.0) -> tuple[str, float]:
    """CTC prefix beam search over (T, V) log-probabilities of one utterance.

    Returns (transcript, confidence), the confidence being the best transcript's share of the
    probability of every transcript left in the beam. Symbols with a log-probability below
    ``prune`` at a frame are not extended there (they cannot reach the beam; saves most of the work).
    """
    lp = log_probs[:length].double().cpu().numpy()
    # prefix -> (log P(paths ending in blank), log P(paths ending in its last symbol))
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for frame in lp:
        candidates = [s for s in np.nonzero(frame >= prune)[0].tolist() if s != BLANK]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (p_blank, p_symbol) in beams.items():
            total = _logsumexp(p_blank, p_symbol)
            entry = nxt[prefix]
            entry[0] = _logsumexp(entry[0], total + frame[BLANK])            # stay, via a blank
            if prefix:                                                        # stay, repeating the last symbol
                entry[1] = _logsumexp(entry[1], p_symbol + frame[prefix[-1]])
            for s in candidates:
                extended = nxt[prefix + (s,)]
                # a repeated symbol only starts a new one after a blank
                source = p_blank if prefix and s == prefix[-1] else total
                extended[1] = _logsumexp(extended[1], source + frame[s])
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    # prefixes that differ only in spaces read the same: merge them before ranking
    merged: dict[str, float] = defaultdict(lambda: -math.inf)
    for prefix, (p_blank, p_symbol) in beams.items():
        text = " ".join(decode_symbols(list(prefix)).split())
        merged[text] = _logsumexp(merged[text], _logsumexp(p_blank, p_symbol))
    text, best = max(merged.items(), key=lambda kv: kv[1])
    total = -math.inf
    for value in merged.values():
        total = _logsumexp(total, value)
    return text, math.exp(best - total)


def edit_distance(reference: list, hypothesis: list) -> int:
    """Levenshtein distance: fewest substitutions, deletions and insertions turning one into the other."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def error_counts(reference: str, hypothesis: str) -> tuple[int, int, int, int]:
    """(word edits, reference words, character edits, reference characters) of one utterance."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    return (edit_distance(ref.split(), hyp.split()), len(ref.split()),
            edit_distance(list(ref), list(hyp)), len(ref))


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate over a corpus: total word edits / total reference words."""
    counts = [error_counts(r, h) for r, h in zip(references, hypotheses)]
    return sum(c[0] for c in counts) / max(1, sum(c[1] for c in counts))


def cer(references: list[str], hypotheses: list[str]) -> float:
    """Character error rate over a corpus (spaces count as characters)."""
    counts = [error_counts(r, h) for r, h in zip(references, hypotheses)]
    return sum(c[2] for c in counts) / max(1, sum(c[3] for c in counts))
