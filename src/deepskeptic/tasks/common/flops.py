"""Forward FLOPs as torch's FLOP counter sees them (a multiply-add counts 2)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(model: nn.Module, *inputs, **kw_inputs) -> int:
    """FLOPs of one forward pass of ``model`` on ``inputs``, in eval mode, without gradients; the
    module's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs, **kw_inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
