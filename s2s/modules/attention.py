"""Attention over encoder states: additive (Bahdanau et al. 2015) or multiplicative (Luong et al. 2015).

Stateless: keys are projected once per batch by ``project_keys`` and passed back in, so that search can reorder
and reuse them. Queries may cover many decoder steps at once ([B, T, Q]) when the decoder allows it.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_KINDS = ("bahdanau", "luong_dot", "luong_general")


class Attention(nn.Module):
    def __init__(self, kind: str, query_size: int, key_size: int):
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {kind!r}")
        if kind == "luong_dot" and query_size != key_size:
            raise ValueError(f"luong_dot attention needs equal query and key sizes, not {query_size} and {key_size}")
        self.kind = kind
        self.key_proj = nn.Linear(key_size, query_size, bias=False) if kind != "luong_dot" else None
        if kind == "bahdanau":
            self.query_proj = nn.Linear(query_size, query_size, bias=False)
            self.energy = nn.Linear(query_size, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """[B, S, K] → [B, S, Q], once per batch."""
        return keys if self.key_proj is None else self.key_proj(keys)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query [B, T, Q], projected keys [B, S, Q], values [B, S, K], mask [B, S]
        → context [B, T, K], weights [B, T, S] (rows sum to one over real tokens, zero on padding).

        The query may also have N·B rows, N consecutive ones per source (beam search's hypotheses): they attend
        to their source together, so that the source is never copied N times."""
        rows, steps, sources = query.size(0), query.size(1), keys.size(0)
        if rows != sources:
            context, weights = self(query.reshape(sources, -1, query.size(-1)), keys, values, mask)
            return context.reshape(rows, steps, -1), weights.reshape(rows, steps, -1)
        if self.kind == "bahdanau":
            hidden = torch.tanh(self.query_proj(query).unsqueeze(2) + keys.unsqueeze(1))  # [B, T, S, Q]
            scores = self.energy(hidden).squeeze(-1)  # [B, T, S]
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))  # [B, T, S]
        scores = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights.to(values.dtype), values)  # [B, T, K]
        return context, weights
