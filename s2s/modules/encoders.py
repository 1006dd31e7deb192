"""Recurrent encoder: embeddings → stacked (bi)GRU/LSTM/RNN over the source; padding never reaches a real state."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from s2s import kernels
from s2s.modules.dropout import Dropout
from s2s.modules.recurrence import stacked_gru
from s2s.tokenizer import PAD, UNK

RNN_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}  # nn.RNN: Elman's layer, h' = tanh(W x + U h + b)


def set_forget_bias(module: nn.Module, value: float | None) -> None:
    """Every LSTM layer in ``module`` starts with its forget gates' bias at ``value`` (Gers et al. 2000; 1.0 after
    Jozefowicz et al. 2015), so that early in training the cell keeps what it holds. PyTorch adds two biases, so the
    input one gets ``value`` and the hidden one 0 in the forget gates' slice (the second quarter: gates i, f, g, o).
    None keeps PyTorch's initialisation."""
    if value is None:
        return
    with torch.no_grad():
        for lstm in (layer for layer in module.modules() if isinstance(layer, nn.LSTM)):
            forget = slice(lstm.hidden_size, 2 * lstm.hidden_size)
            for name, bias in lstm.named_parameters():
                if name.startswith("bias_ih"):
                    bias[forget] = value
                elif name.startswith("bias_hh"):
                    bias[forget] = 0.0


class EncoderOutput(NamedTuple):
    states: torch.Tensor  # [B, S, D] one vector per source position, in the original source order
    mask: torch.Tensor  # [B, S] True at real tokens, False at padding
    summary: torch.Tensor  # [B, D] final states of the top layer, both directions joined


class RNNEncoder(nn.Module):
    """Each layer runs one unidirectional RNN per direction over the padded batch; the backward one reads every
    sentence reversed within its length, so padding never enters a real position's state in either direction (a
    sentence gets exactly the states alone that it gets in a padded batch). PyTorch's packed sequences would do
    the same, but their backward pass on the CPU is much slower than the padded one (tools/bench.py)."""

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
        word_dropout: float = 0.0,
        input_size: int | None = None,
    ):
        """``input_size``: what the first layer reads, when the caller joins more to each embedding (a tagger's
        character-level word vectors) and calls ``encode``; by default the embedding alone."""
        super().__init__()
        self.word_dropout = word_dropout
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            nn.ModuleList(
                RNN_CELLS[cell](
                    (input_size or embedding_size) if layer == 0 else hidden_size * directions,
                    hidden_size,
                    batch_first=True,
                )
                for _ in range(directions)
            )
            for layer in range(layers)
        )
        self.dropout = Dropout(dropout)
        # GRU layers run s2s's own recurrence (s2s.modules.recurrence) unless s2s.kernels.fused_rnn says the
        # device's fused RNN (cuDNN) serves them better
        self.fast_gru = cell == "gru"
        self.reverse_source = reverse_source
        self.output_size = hidden_size * directions

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """src [B, S] ids, lengths [B] → EncoderOutput."""
        lengths = lengths.to(src.device)
        return self.encode(self.embed(self.drop_words(src)), lengths)

    def drop_words(self, src: torch.Tensor) -> torch.Tensor:
        """Training: ``word_dropout`` of the real ids become UNK, so the model cannot lean on any one word."""
        if not (self.training and self.word_dropout):
            return src
        dropped = torch.rand(src.shape, device=src.device) < self.word_dropout
        return src.masked_fill(dropped & src.ne(PAD), UNK)

    def encode(self, vectors: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """vectors [B, S, input] (the embedded source, or more joined to it), lengths [B] on their device →
        EncoderOutput."""
        if self.reverse_source:
            vectors = reverse_padded(vectors, lengths)
        states = self.dropout(vectors)  # [B, S, input]
        for number, layer in enumerate(self.layers):
            if number > 0:
                states = self.dropout(states)  # between layers, as nn.GRU(dropout=...) does
            states = self.run_layer(layer, states, lengths)  # [B, S, dirs × H]
        mask = position_mask(lengths, states)
        summary = self.summarise(states, lengths)
        if self.reverse_source:
            states = reverse_padded(states, lengths)  # back to the original order, for attention and pictures
        states = states.masked_fill(~mask[..., None], 0.0)  # past each length: no state
        return EncoderOutput(self.dropout(states), mask, summary)

    def run_layer(self, layer: nn.ModuleList, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One layer, both directions: states [B, S, input] → [B, S, dirs × H]."""
        inputs = [states] + [reverse_padded(states, lengths)] * (len(layer) - 1)  # the backward RNN reads reversed
        if self.fast_gru and not kernels.fused_rnn(states):
            outputs = list(self.run_gru_directions(layer, inputs).unbind(0))
        else:
            outputs = [rnn(x)[0] for rnn, x in zip(layer, inputs, strict=True)]
        if len(outputs) > 1:
            outputs[1] = reverse_padded(outputs[1], lengths)
        return torch.cat(outputs, dim=-1)

    @staticmethod
    def run_gru_directions(layer: nn.ModuleList, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Every direction's GRU at once: inputs (one [B, S, E] per direction) → states [D, B, S, H]."""
        stack = lambda name: torch.stack([getattr(rnn, name) for rnn in layer])  # noqa: E731
        x = torch.stack(inputs)  # [D, B, S, E]
        directions, batch, steps, _ = x.shape
        gates = torch.baddbmm(stack("bias_ih_l0").unsqueeze(1), x.flatten(1, 2), stack("weight_ih_l0").transpose(1, 2))
        gates = gates.view(directions, batch, steps, -1).permute(2, 0, 1, 3)  # [S, D, B, 3H]
        h0 = x.new_zeros(directions, batch, layer[0].hidden_size, dtype=torch.float32)
        states = stacked_gru(gates, h0, stack("weight_hh_l0"), stack("bias_hh_l0"))  # [S, D, B, H]
        return states.permute(1, 2, 0, 3)

    def summarise(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The top layer's final states [B, dirs × H]: forward at the last real position, backward at the first."""
        hidden = self.output_size // len(self.layers[0])
        rows = torch.arange(states.size(0), device=states.device)
        last = states[rows, lengths - 1, :hidden]  # [B, H]
        if len(self.layers[0]) == 1:
            return last
        return torch.cat([last, states[:, 0, hidden:]], dim=-1)


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
