"""Recurrent encoder: embeddings → stacked (bi)LSTM/GRU over the source, padding handled by packing."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2s.tokenizer import PAD

RNN_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class EncoderOutput(NamedTuple):
    states: torch.Tensor  # [B, S, D] one vector per source position, in the original source order
    mask: torch.Tensor  # [B, S] True at real tokens, False at padding
    summary: torch.Tensor  # [B, D] final states of the top layer, both directions joined


class RNNEncoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        layers: int,
        cell: str,
        bidirectional: bool,
        dropout: float,
        reverse_source: bool,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        self.rnn = RNN_CELLS[cell](
            embedding_size,
            hidden_size,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.reverse_source = reverse_source
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """src [B, S] ids, lengths [B] (CPU) → EncoderOutput."""
        if self.reverse_source:
            src = reverse_padded(src, lengths)
        embedded = self.dropout(self.embed(src))  # [B, S, E]
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, final = self.rnn(packed)
        states, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))  # [B, S, D]
        if self.reverse_source:
            states = reverse_padded(states, lengths)  # back to the original order, for attention and pictures
        return EncoderOutput(self.dropout(states), position_mask(lengths, src), self.summarise(final))

    def summarise(self, final) -> torch.Tensor:
        hidden = final[0] if isinstance(final, tuple) else final  # LSTM: (h, c); the summary reads h
        directions = 2 if self.rnn.bidirectional else 1
        hidden = hidden.view(self.rnn.num_layers, directions, hidden.size(1), hidden.size(2))[-1]  # [dirs, B, H]
        return hidden.transpose(0, 1).reshape(hidden.size(1), -1)  # [B, dirs × H]


def position_mask(lengths: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B, S] True at the positions before each row's length."""
    positions = torch.arange(like.size(1), device=like.device)
    return positions[None, :] < lengths.to(like.device)[:, None]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``length`` positions of each row of x [B, S, ...]; padding stays where it is."""
    positions = torch.arange(x.size(1), device=x.device)[None, :]  # [1, S]
    lengths = lengths.to(x.device)[:, None]  # [B, 1]
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, S]
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)
