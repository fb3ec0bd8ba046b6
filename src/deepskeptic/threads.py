"""CPU thread control shared by tasks whose tensors are too small for a second thread."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Run torch on one CPU thread, then restore the count.

    Small networks stepping through short sequences (forecast windows, per-utterance STFTs) gain
    nothing from a second thread and, on a busy machine, lose a lot to the pool's hand-offs
    (measured here: a 2-layer LSTM step 4 ms on one thread, 50 ms to 1.7 s on two busy cores).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
