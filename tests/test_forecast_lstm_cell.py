"""The explicit LSTM equals torch's nn.LSTM for the same weights and exposes its gates."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deepskeptic.models.lstm_cell import GATE_NAMES, ExplicitLSTM


@pytest.mark.parametrize("layers", [1, 2])
def test_explicit_lstm_equals_nn_lstm(layers):
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=layers, batch_first=True)
    explicit = ExplicitLSTM.from_lstm(lstm)
    x = torch.randn(4, 7, 3)
    state = (torch.randn(layers, 4, 5), torch.randn(layers, 4, 5))
    for s in (None, state):
        want, (h_want, c_want) = lstm(x, s)
        got, (h_got, c_got), gates = explicit(x, s)
        assert (got - want).abs().max() < 1e-5
        assert (h_got - h_want).abs().max() < 1e-5 and (c_got - c_want).abs().max() < 1e-5
    assert set(gates) == set(GATE_NAMES)
    for name in GATE_NAMES:
        assert gates[name].shape == (layers, 4, 7, 5)
    assert torch.allclose(gates["hidden"][-1], got)
    assert torch.allclose(gates["cell"][:, :, -1], c_got)
    for name in ("forget", "input", "output"):
        assert 0 <= gates[name].min() and gates[name].max() <= 1


def test_explicit_lstm_weights_load_into_nn_lstm():
    explicit = ExplicitLSTM(2, 4, 2)
    lstm = nn.LSTM(2, 4, num_layers=2, batch_first=True)
    lstm.load_state_dict(explicit.state_dict())
    x = torch.randn(2, 5, 2)
    assert (explicit(x)[0] - lstm(x)[0]).abs().max() < 1e-5
