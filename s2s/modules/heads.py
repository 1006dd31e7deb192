"""Many-to-one: the encoder's states pooled into one vector per text, and a classifier over it."""

from __future__ import annotations

import torch
from torch import nn

from s2s.modules.dropout import Dropout
from s2s.modules.encoders import EncoderOutput


class Pooling(nn.Module):
    """``last``: the final states of both directions; ``mean`` / ``max``: over the real (non-pad) positions;
    ``attention``: a learned weighting of the positions (Yang et al. 2016), masked at padding."""

    def __init__(self, kind: str, size: int):
        super().__init__()
        self.kind = kind
        if kind == "attention":
            self.score = nn.Sequential(nn.Linear(size, size), nn.Tanh(), nn.Linear(size, 1, bias=False))

    def forward(self, encoded: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """→ pooled [B, D], and the attention weights [B, S] (None unless ``attention``)."""
        states, mask = encoded.states, encoded.mask  # [B, S, D], [B, S]
        if self.kind == "last":
            return encoded.summary, None
        if self.kind == "mean":
            summed = states.masked_fill(~mask[..., None], 0.0).sum(1)  # [B, D]
            return summed / mask.sum(1, keepdim=True).to(states.dtype), None
        if self.kind == "max":
            return states.masked_fill(~mask[..., None], float("-inf")).amax(1), None
        scores = self.score(states).squeeze(-1).float().masked_fill(~mask, float("-inf"))  # [B, S]
        weights = scores.softmax(-1)
        return torch.bmm(weights.to(states.dtype)[:, None, :], states)[:, 0], weights


class ClassifierHead(nn.Module):
    """Dropout, an optional hidden layer, and the output layer: pooled [B, D] → logits [B, L]."""

    def __init__(self, input_size: int, n_labels: int, hidden_size: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [Dropout(dropout)]
        if hidden_size:
            layers += [nn.Linear(input_size, hidden_size), nn.Tanh(), Dropout(dropout)]
            input_size = hidden_size
        layers.append(nn.Linear(input_size, n_labels))
        self.layers = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.layers(pooled)
