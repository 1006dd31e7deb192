"""Stacked unidirectional GRU, LSTM or plain RNN layers that take an initial state and return the final one: the body
of a language model, whose state is carried from one segment of a stream to the next and from a prompt into
generation.

GRU layers on the CPU run s2s's own recurrence (``s2s.modules.recurrence``: the compiled kernels where
``s2s.kernels`` has them), as the encoder's do; LSTM and plain RNN layers, and GRU layers on other devices, run
PyTorch's.
Dropout is applied between layers (not inside the recurrence), as ``nn.GRU(dropout=...)`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s2s import kernels
from s2s.modules.dropout import Dropout
from s2s.modules.encoders import RNN_CELLS
from s2s.modules.recurrence import stacked_gru

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU: h [L, B, H]; LSTM: (h, c)


class RecurrentStack(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, layers: int, cell: str, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            RNN_CELLS[cell](input_size if number == 0 else hidden_size, hidden_size, batch_first=True)
            for number in range(layers)
        )
        self.dropout = Dropout(dropout)
        self.lstm, self.own_gru, self.hidden_size = cell == "lstm", cell == "gru", hidden_size

    @property
    def state_dtype(self) -> torch.dtype:
        """States are kept in fp32 (fp64 when the weights are, for gradient checks) whatever autocast computes in."""
        return torch.promote_types(self.layers[0].weight_hh_l0.dtype, torch.float32)

    def zero_state(self, batch: int, like: torch.Tensor) -> Hidden:
        """The state before anything is read: zeros [L, B, H], h and c for an LSTM."""
        zeros = lambda: like.new_zeros(len(self.layers), batch, self.hidden_size, dtype=self.state_dtype)  # noqa: E731
        return (zeros(), zeros()) if self.lstm else zeros()

    def forward(self, x: torch.Tensor, state: Hidden) -> tuple[torch.Tensor, Hidden]:
        """x [B, T, input], the state before it → outputs [B, T, H] and the state after step T (of rows that run
        all T steps: a padded row's final state is not its own)."""
        finals = []
        for number, rnn in enumerate(self.layers):
            if number > 0:
                x = self.dropout(x)
            x, final = self.run_layer(rnn, x, layer_state(state, number))
            finals.append(final)
        if self.lstm:
            return x, (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))
        return x, torch.stack(finals)

    def run_layer(self, rnn: nn.Module, x: torch.Tensor, state: Hidden) -> tuple[torch.Tensor, Hidden]:
        acc = self.state_dtype
        if self.lstm:
            h, c = state
            out, (h, c) = rnn(x, (h.unsqueeze(0).to(x.dtype), c.unsqueeze(0).to(x.dtype)))
            return out, (h[0].to(acc), c[0].to(acc))
        if kernels.fused_rnn(x) or not self.own_gru:
            out, h = rnn(x, state.unsqueeze(0).to(x.dtype))
            return out, h[0].to(acc)
        gates = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0).transpose(0, 1).unsqueeze(1)  # [T, 1, B, 3H]
        states = stacked_gru(gates, state.to(acc).unsqueeze(0), rnn.weight_hh_l0[None], rnn.bias_hh_l0[None])
        out = states[:, 0].transpose(0, 1)  # [B, T, H]
        return out, out[:, -1]


def layer_state(state: Hidden, layer: int) -> Hidden:
    return (state[0][layer], state[1][layer]) if isinstance(state, tuple) else state[layer]


def select_rows(state: Hidden, rows: torch.Tensor) -> Hidden:
    """Rows ``rows`` of a state [L, B, H] (both tensors of an LSTM's)."""
    return tuple(part[:, rows] for part in state) if isinstance(state, tuple) else state[:, rows]


def join_rows(states: list[Hidden]) -> Hidden:
    """The rows of several states [L, B_i, H], one after another."""
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))
    return torch.cat(states, dim=1)


def detached(state: Hidden) -> Hidden:
    return tuple(part.detach() for part in state) if isinstance(state, tuple) else state.detach()
