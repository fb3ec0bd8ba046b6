"""Classical baselines of ``textgen``: a character n-gram model and the standard library's compressors.

Both are scored in bits per character (bpc) of the held-out text, on the same split and (for the
n-gram) the same vocabulary as the networks.

N-gram: interpolated Kneser-Ney (Chen & Goodman 1998, one absolute discount per order,
D = n1 / (n1 + 2 n2) from that order's count-of-counts; 0.5 when n1 or n2 is 0), or Witten-Bell.
Level k of the recursion, with history h (the k-1 previous characters) and next character w::

    KN:  P_k(w|h) = max(a(hw) - D_k, 0) / T(h) + D_k U(h) / T(h) * P_{k-1}(w|h')
    WB:  P_k(w|h) = (a(hw) + U(h) P_{k-1}(w|h')) / (T(h) + U(h))
    P_0(w) = 1 / V                  (uniform over the vocabulary, unknown symbol included)
    P_k(w|h) = P_{k-1}(w|h')        when h was never seen (T(h) = 0) or the text is too short

where a(hw) is the count of hw at the highest order and, for Kneser-Ney's lower orders, the number
of distinct characters seen before hw (its continuation count); T(h) = sum over w of a(hw) and
U(h) the number of distinct w with a(hw) > 0. Witten-Bell uses plain counts at every order.

Every n-gram is packed into one int64 (b = ceil(log2 V) bits per character, newest character in
the lowest bits), so counting is ``np.unique`` and lookup ``np.searchsorted``: orders up to
63 // b (9 for a vocabulary of up to 128 characters) are exact, and scoring every order at once
costs one pass per order. Compressors: bits to encode the held-out text after the training text
minus bits for the training text alone, per held-out character (zlib only sees its last 32 KB).
"""
from __future__ import annotations

import bz2
import lzma
import math
import zlib
from dataclasses import dataclass

import numpy as np


def _discount(counts: np.ndarray) -> float:
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


@dataclass
class _Level:
    """One order's tables: sorted n-gram codes with their counts, and per-history totals."""
    codes: np.ndarray
    counts: np.ndarray
    ctx_codes: np.ndarray
    ctx_total: np.ndarray   # T(h)
    ctx_types: np.ndarray   # U(h)
    discount: float

    @classmethod
    def from_counts(cls, codes: np.ndarray, counts: np.ndarray, bits: int) -> "_Level":
        ctx = codes >> bits                                   # sorted, because codes are sorted
        ctx_codes, first, types = np.unique(ctx, return_index=True, return_counts=True)
        total = np.add.reduceat(counts, first) if len(counts) else counts
        return cls(codes, counts, ctx_codes, total, types, _discount(counts))

    @staticmethod
    def _lookup(table: np.ndarray, values: np.ndarray, payload: np.ndarray) -> np.ndarray:
        if len(table) == 0:
            return np.zeros(len(values), dtype=np.float64)
        pos = np.clip(np.searchsorted(table, values), 0, len(table) - 1)
        return np.where(table[pos] == values, payload[pos], 0).astype(np.float64)

    def interpolate(self, codes: np.ndarray, lower: np.ndarray, bits: int, smoothing: str) -> np.ndarray:
        a = self._lookup(self.codes, codes, self.counts)
        ctx = codes >> bits
        total = self._lookup(self.ctx_codes, ctx, self.ctx_total)
        types = self._lookup(self.ctx_codes, ctx, self.ctx_types)
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        if smoothing == "witten-bell":
            p = (a + types * lower) / (safe + types)
        else:
            d = self.discount
            p = np.maximum(a - d, 0) / safe + d * types / safe * lower
        return np.where(seen, p, lower)


def _codes(ids: np.ndarray, order: int, bits: int) -> list[np.ndarray]:
    """codes[k-1][j] packs ids[j : j+k] (the k-gram ending at position j+k-1), for k = 1..order."""
    out = [ids.astype(np.int64)]
    for k in range(2, order + 1):
        prev = out[-1]
        out.append((prev[:-1] << bits) | ids[k - 1:].astype(np.int64))
    return out


class NGramLM:
    """Character n-gram language model over integer ids in [0, vocab_size)."""

    def __init__(self, vocab_size: int, max_order: int = 10, smoothing: str = "kneser-ney"):
        self.vocab_size = vocab_size
        self.bits = max(1, math.ceil(math.log2(max(2, vocab_size))))
        self.max_order = max(1, min(max_order, 63 // self.bits))
        self.smoothing = smoothing
        self.raw: list[_Level] = []
        self.cont: list[_Level] = []

    def fit(self, ids: np.ndarray) -> "NGramLM":
        ids = np.asarray(ids, dtype=np.int64)
        self.max_order = max(1, min(self.max_order, len(ids)))
        grams = _codes(ids, self.max_order, self.bits)
        uniques = [np.unique(g, return_counts=True) for g in grams]
        self.raw = [_Level.from_counts(c, n, self.bits) for c, n in uniques]
        # continuation counts of k-grams: distinct characters before them = distinct (k+1)-grams ending in them
        self.cont = []
        for k in range(1, self.max_order):
            mask = (1 << (self.bits * k)) - 1
            codes, counts = np.unique(uniques[k][0] & mask, return_counts=True)
            self.cont.append(_Level.from_counts(codes, counts, self.bits))
        return self

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """(orders, len(ids)): P(ids[i] | ids[:i]) under the model of each order 1..max_order.

        The text is scored on its own: the first characters use the orders their history allows.
        """
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        grams = _codes(ids, self.max_order, self.bits)
        lower = np.full(n, 1.0 / self.vocab_size)          # the chain P_{k-1} of lower orders
        top_prev = lower.copy()
        rows = []
        for k in range(1, self.max_order + 1):
            valid = slice(k - 1, n)                        # positions with a full history of k-1 chars
            codes = grams[k - 1] if k - 1 < len(grams) else np.zeros(0, dtype=np.int64)
            top = top_prev.copy()
            if len(codes):
                top[valid] = self.raw[k - 1].interpolate(codes, lower[valid], self.bits, self.smoothing)
            rows.append(top)
            top_prev = top
            if k < self.max_order:
                chain = lower.copy()
                level = self.raw[k - 1] if self.smoothing == "witten-bell" else self.cont[k - 1]
                if len(codes):
                    chain[valid] = level.interpolate(codes, lower[valid], self.bits, self.smoothing)
                lower = chain
        return np.stack(rows)

    def bpc_by_order(self, ids: np.ndarray) -> dict[int, float]:
        p = self.probabilities(ids)
        return {k + 1: float(-np.log2(p[k]).mean()) for k in range(len(p))}


# ------------------------------------------------------------------ compressors

COMPRESSORS = {
    "zlib": lambda data, level: zlib.compress(data, level),
    "bz2": lambda data, level: bz2.compress(data, level),
    "lzma": lambda data, level: lzma.compress(data, preset=level),
}


def compressed_bits(name: str, text: str, level: int = 9) -> int:
    return 8 * len(COMPRESSORS[name](text.encode("utf-8"), level))


def conditional_bpc(name: str, train: str, held: str, level: int = 9, train_bits: int | None = None) -> float:
    """Bits per character of ``held`` when it follows ``train`` in the compressed stream."""
    if not held:
        raise ValueError("no held-out text")
    base = compressed_bits(name, train, level) if train_bits is None else train_bits
    return (compressed_bits(name, train + held, level) - base) / len(held)
