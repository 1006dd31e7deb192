"""Recurrent decoder: a language model over the target, conditioned on the encoder.

One step, for time t (Luong et al. 2015's flow, which JoeyNMT and OpenNMT-py also follow):

    x_t = [embed(y_{t-1}); o_{t-1} if input feeding; summary if conditioning is every_step]
    h_t = RNN(x_t, h_{t-1})
    c_t = attention(h_t, encoder states)                        (when attention is on)
    o_t = tanh(W [h_t; c_t; summary if every_step])            (o_t = h_t with neither)
    logits_t = V dropout(o_t)

Without input feeding the RNN and attention run over all target positions at once, which is much faster.
The decoder keeps no state of its own: ``DecoderState`` and ``Memory`` are values passed in and out.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from s2s import kernels
from s2s.modules.attention import Attention
from s2s.modules.dropout import Dropout
from s2s.modules.encoders import RNN_CELLS, EncoderOutput
from s2s.modules.input_feeding import fed_attention_gru, fed_attention_search, input_gates
from s2s.tokenizer import PAD

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # GRU: h [L, B, H]; LSTM: (h, c)


class Memory(NamedTuple):
    """What the decoder reads from the encoder, computed once per batch. The decoder may run N rows per source
    (beam search's hypotheses, N consecutive rows each): the memory stays one row per source."""

    states: torch.Tensor  # [B, S, K]
    keys: torch.Tensor | None  # [B, S, Q] attention keys, projected once; None without attention
    mask: torch.Tensor  # [B, S]
    summary: torch.Tensor  # [B, K]

    def select(self, index: torch.Tensor) -> Memory:
        """Rows ``index`` of every tensor (to expand a batch for beam search)."""
        # indexing, not index_select: on the CPU, index_select of 3-d rows is much slower
        return Memory(*(None if t is None else t[index] for t in self))


class DecoderState(NamedTuple):
    hidden: Hidden  # [L, B, H]
    feed: torch.Tensor | None  # [B, H] the previous attentional vector, with input feeding


class Bridge(nn.Module):
    """Encoder summary [B, K] → the decoder's initial hidden state, for any layer counts on either side."""

    def __init__(self, summary_size: int, hidden_size: int, layers: int, lstm: bool):
        super().__init__()
        self.layers, self.hidden_size = layers, hidden_size
        self.to_hidden = nn.Linear(summary_size, layers * hidden_size)
        self.to_cell = nn.Linear(summary_size, layers * hidden_size) if lstm else None

    def forward(self, summary: torch.Tensor) -> Hidden:
        h = self.stack(torch.tanh(self.to_hidden(summary)))
        return h if self.to_cell is None else (h, self.stack(self.to_cell(summary)))

    def stack(self, flat: torch.Tensor) -> torch.Tensor:
        batch = flat.size(0)
        return flat.view(batch, self.layers, self.hidden_size).transpose(0, 1).contiguous()  # [L, B, H]


class RNNDecoder(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        layers: int,
        cell: str,
        dropout: float,
        summary_size: int,
        attention: str,
        input_feeding: bool,
        every_step: bool,
        tie_embeddings: bool,
        attention_penalty: float = 0.0,
        context_gate: bool = False,
    ):
        super().__init__()
        self.attention_penalty = attention_penalty  # λ of the doubly stochastic attention term of the loss
        if input_feeding and attention == "none":
            raise ValueError("input feeding needs attention")
        if context_gate and attention == "none":
            raise ValueError("a context gate needs attention")
        self.input_feeding, self.every_step = input_feeding, every_step
        # the hand-written loop covers the common input-fed model; other shapes take the general autograd path
        self.fast_loop = input_feeding and cell == "gru" and layers == 1 and not every_step
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=PAD)
        rnn_input = embedding_size + hidden_size * input_feeding + summary_size * every_step
        self.rnn = RNN_CELLS[cell](
            rnn_input,
            hidden_size,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.attention = Attention(attention, hidden_size, summary_size) if attention != "none" else None
        # Show, Attend and Tell's gating scalar: β = σ(w · h + b), h the state that queried the attention, scales
        # that step's context, so that the decoder can lean on the source (the picture) for a noun and on its own
        # state for "a" or "of"
        self.context_gate = nn.Linear(hidden_size, 1) if context_gate else None
        combined = hidden_size + summary_size * (self.attention is not None) + summary_size * every_step
        self.combine = nn.Linear(combined, hidden_size) if combined != hidden_size else None
        self.dropout = Dropout(dropout)
        self.output = nn.Linear(hidden_size, vocab_size)
        self.bridge = Bridge(summary_size, hidden_size, layers, lstm=cell == "lstm")
        if tie_embeddings:
            if embedding_size != hidden_size:
                raise ValueError("tied embeddings need decoder embedding_size == hidden_size")
            self.output.weight = self.embed.weight
            # at the output layer's scale: nn.Embedding's N(0, 1) would start the logits at std ~√H (~16 at 256),
            # far from uniform, and training spends its first thousands of steps undoing that
            with torch.no_grad():
                self.embed.weight.normal_(0.0, hidden_size**-0.5)
                self.embed.weight[PAD].zero_()

    def memory(self, encoded: EncoderOutput) -> Memory:
        """Kept in fp32 (fp64 in gradient checks) even under autocast: every decoding step reads it, and casting
        it there would copy it once per step."""
        accumulate = torch.promote_types(encoded.states.dtype, torch.float32)
        keys = self.attention.project_keys(encoded.states) if self.attention is not None else None
        return Memory(
            encoded.states.to(accumulate),
            None if keys is None else keys.to(accumulate),
            encoded.mask,
            encoded.summary.to(accumulate),
        )

    def initial_state(self, memory: Memory) -> DecoderState:
        hidden = self.bridge(memory.summary)
        feed = memory.summary.new_zeros(memory.summary.size(0), self.rnn.hidden_size) if self.input_feeding else None
        return DecoderState(hidden, feed)

    def forward(
        self, prev: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """prev [B, T] previous target ids → logits [B, T, V], the state after step T, attention [B, T, S]."""
        outputs, state, weights = self.attentional(prev, state, memory)
        return self.logits(outputs), state, weights

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """Attentional vectors [..., H] → next-token logits [..., V]."""
        return self.output(self.dropout(outputs))

    def attentional(
        self, prev: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """prev [B, T] previous target ids → attentional vectors [B, T, H], the state after step T, attention
        [B, T, S]."""
        embedded = self.dropout(self.embed(prev))  # [B, T, E]
        if self.input_feeding:
            outputs, weights, state = self.run_fed(embedded, state, memory)
        else:
            rnn_out, hidden = self.rnn(self.rnn_input(embedded, None, memory), state.hidden)  # [B, T, H]
            outputs, weights = self.attend(rnn_out, memory)
            state = DecoderState(hidden, None)
        return outputs, state, weights

    def run_fed(self, embedded: torch.Tensor, state: DecoderState, memory: Memory):
        """Input feeding makes step t depend on step t-1's attentional vector: one position at a time."""
        if self.fast_loop:
            return self.run_fed_fast(embedded, state, memory)
        return self.run_fed_autograd(embedded, state, memory)

    def run_fed_fast(self, embedded: torch.Tensor, state: DecoderState, memory: Memory):
        outputs, weights, hidden = fed_attention_gru(
            input_gates(embedded, self.rnn),
            state.hidden[0],
            state.feed,
            memory.keys,
            memory.states,
            memory.mask,
            self.rnn,
            self.attention,
            self.combine,
            self.context_gate,
            kernels.products_dtype(embedded),
        )
        return outputs, weights, DecoderState(hidden.unsqueeze(0), outputs[:, -1])

    def search_in_kernels(
        self, memory: Memory, limit: torch.Tensor, beam_size: int, alpha: float, nbest: int, attention: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Greedy search (``beam_size`` 1) or beam search in the compiled kernels: tokens [B, nbest, L], scores
        [B, nbest], attention [B, nbest, L, S] (see ``fed_attention_search``); None where the kernels do not cover
        the search: another decoder shape, dropout on (training mode), gradients, or ``s2s.kernels.usable`` says no."""
        dtype = kernels.products_dtype(memory.states)
        covered = self.fast_loop and not self.training and not torch.is_grad_enabled()
        if not covered or self.output.out_features < 2 * beam_size:  # (search explains a vocabulary that small)
            return None
        if not kernels.usable(memory.states, memory.states.dtype, dtype):
            return None
        state = self.initial_state(memory)
        return fed_attention_search(
            memory,
            state.hidden[0],
            state.feed,
            limit,
            self.embed,
            self.rnn,
            self.attention,
            self.combine,
            self.context_gate,
            self.output,
            dtype,
            beam_size,
            alpha,
            nbest,
            attention,
        )

    def run_fed_autograd(self, embedded: torch.Tensor, state: DecoderState, memory: Memory):
        hidden, feed, outputs, weights = state.hidden, state.feed, [], []
        for t in range(embedded.size(1)):
            rnn_out, hidden = self.rnn(self.rnn_input(embedded[:, t : t + 1], feed, memory), hidden)  # [B, 1, H]
            output, weight = self.attend(rnn_out, memory)
            feed = output[:, 0]
            outputs.append(output)
            weights.append(weight)
        return torch.cat(outputs, 1), torch.cat(weights, 1), DecoderState(hidden, feed)

    def rnn_input(self, embedded: torch.Tensor, feed: torch.Tensor | None, memory: Memory) -> torch.Tensor:
        parts = [embedded]
        if feed is not None:
            parts.append(feed.unsqueeze(1).to(embedded.dtype))
        if self.every_step:
            summary = per_row(memory.summary, embedded.size(0))
            parts.append(summary.unsqueeze(1).expand(-1, embedded.size(1), -1).to(embedded.dtype))
        return torch.cat(parts, -1) if len(parts) > 1 else embedded

    def attend(self, rnn_out: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rnn_out [B, T, H] → attentional vectors [B, T, H] and weights [B, T, S] (or None)."""
        parts, weights = [rnn_out], None
        if self.attention is not None:
            context, weights = self.attention(rnn_out, memory.keys, memory.states, memory.mask)
            if self.context_gate is not None:
                context = context * torch.sigmoid(self.context_gate(rnn_out).float()).to(context.dtype)
            parts.append(context.to(rnn_out.dtype))
        if self.every_step:
            summary = per_row(memory.summary, rnn_out.size(0))
            parts.append(summary.unsqueeze(1).expand(-1, rnn_out.size(1), -1).to(rnn_out.dtype))
        if self.combine is None:
            return rnn_out, weights
        return torch.tanh(self.combine(torch.cat(parts, -1))), weights

    @staticmethod
    def reorder_state(state: DecoderState, order: torch.Tensor) -> DecoderState:
        """Keep rows ``order`` of the batch (beam search picks which hypotheses go on)."""
        hidden = state.hidden
        hidden = tuple(h[:, order] for h in hidden) if isinstance(hidden, tuple) else hidden[:, order]
        feed = None if state.feed is None else state.feed[order]
        return DecoderState(hidden, feed)


def per_row(x: torch.Tensor, rows: int) -> torch.Tensor:
    """x [B, ...] one row per source → [rows, ...], repeating each source's row for its rows // B hypotheses."""
    return x if x.size(0) == rows else x.repeat_interleave(rows // x.size(0), dim=0)
