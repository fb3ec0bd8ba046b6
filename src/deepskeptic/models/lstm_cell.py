"""The LSTM unit written out gate by gate, so that its gates can be watched.

Training uses the fast ``nn.LSTM``; for inspection its weights are copied into ``ExplicitLSTM``
(``from_lstm``), which computes the same outputs (within 1e-5) and also returns every gate's
activation at every step. Per layer and step, with x the input and h, c the previous states::

    f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate: how much of c to keep
    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate: how much of the candidate to add
    g = tanh   (W_ig x + b_ig + W_hg h + b_hg)      candidate cell values
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate: how much of the cell to show
    c' = f * c + i * g                              the cell state C(t)
    h' = o * tanh(c')                               the hidden state h(t)

The weight layout (rows ordered input, forget, candidate, output) is ``nn.LSTM``'s own, so
``state_dict`` keys and shapes match and weights move between the two unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

GATE_NAMES = ("forget", "input", "candidate", "output", "cell", "hidden")


class ExplicitLSTM(nn.Module):
    """LSTM from explicit gates; equal to nn.LSTM (batch_first=True) within 1e-5 for the same weights."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size
            # Same names, shapes and row order (i, f, g, o) as nn.LSTM.
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, width)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / self.hidden_size ** 0.5  # nn.LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM) -> "ExplicitLSTM":
        """An explicit copy of a batch_first, unidirectional ``nn.LSTM`` with biases."""
        if not lstm.batch_first or lstm.bidirectional or not lstm.bias or lstm.proj_size:
            raise ValueError("ExplicitLSTM copies only batch_first, unidirectional LSTMs with bias")
        out = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers)
        out.load_state_dict({k: v.detach().clone() for k, v in lstm.state_dict().items()})
        return out.to(next(lstm.parameters()).device)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor], dict[str, Tensor]]:
        """x (B, T, input) -> output (B, T, H), (h_n, c_n) each (layers, B, H), and gates:
        {'forget','input','candidate','output','cell','hidden'} each (layers, B, T, H)."""
        batch, steps, _ = x.shape
        H = self.hidden_size
        if state is None:
            zeros = x.new_zeros(self.num_layers, batch, H)
            state = (zeros, zeros)
        h0, c0 = state
        records: dict[str, list[Tensor]] = {name: [] for name in GATE_NAMES}
        layer_in = x
        h_last, c_last = [], []
        for layer in range(self.num_layers):
            w_ih = getattr(self, f"weight_ih_l{layer}")
            w_hh = getattr(self, f"weight_hh_l{layer}")
            bias = getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")
            pre_in = layer_in @ w_ih.T + bias            # (B, T, 4H): input part for all steps at once
            h, c = h0[layer], c0[layer]
            per_step: dict[str, list[Tensor]] = {name: [] for name in GATE_NAMES}
            for t in range(steps):
                z = pre_in[:, t] + h @ w_hh.T             # (B, 4H)
                i = torch.sigmoid(z[:, 0:H])
                f = torch.sigmoid(z[:, H:2 * H])
                g = torch.tanh(z[:, 2 * H:3 * H])
                o = torch.sigmoid(z[:, 3 * H:4 * H])
                c = f * c + i * g
                h = o * torch.tanh(c)
                for name, value in zip(GATE_NAMES, (f, i, g, o, c, h)):
                    per_step[name].append(value)
            for name in GATE_NAMES:
                records[name].append(torch.stack(per_step[name], dim=1))  # (B, T, H)
            layer_in = records["hidden"][-1]
            h_last.append(h)
            c_last.append(c)
        gates = {name: torch.stack(values) for name, values in records.items()}  # (layers, B, T, H)
        return layer_in, (torch.stack(h_last), torch.stack(c_last)), gates
