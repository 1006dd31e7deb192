"""The input-fed attentional decoder's time loop, with backpropagation through time written out by hand.

With input feeding, step t reads step t-1's attentional vector, so the decoder must run one position at a time.
As in ``recurrence`` (whose GRU cell this loop uses), the forward saves only what the backward needs, the backward
carries the gradients of the state and of the fed vector from step to step, and every weight gradient is one
matrix product over all steps at the end. The embedded target words' part of the input gates is computed by the
caller for all positions at once (``input_gates``).

One step (GRU, single layer; PyTorch's gate layout and equations, so the weights are those of ``nn.GRU``):

    gi = x_t + W_if f_{t-1}              (x_t: W_ie e_t + b_ih, precomputed)
    gh = W_hh h_{t-1} + b_hh
    r, z = σ(gi_r + gh_r), σ(gi_z + gh_z);   n = tanh(gi_n + r ⊙ gh_n);   h_t = n + z ⊙ (h_{t-1} - n)
    scores = v · tanh(W_q h_t + keys)  (bahdanau)  or  keys · h_t  (luong);   a = softmax(masked scores)
    c_t = a · values;   o_t = tanh(W_c [h_t; c_t] + b_c);   f_t = o_t

With a context gate (Show, Attend and Tell's β), c_t is first scaled by β_t = σ(w_β · h_t + b_β), one scalar per
row; the forward saves β and the backward reads the gated context from [h_t; c_t].

Matrix products run in ``dtype`` (bf16 under autocast); gates, attention weights and saved activations stay in
fp32. The tests check this loop against ``RNNDecoder``'s general autograd path, gradients included.

When training where ``s2s.kernels`` says so (on the CPU with fp32 or bf16 products, once built), the same loop runs
in the compiled kernels, which fuse each step's element-wise work and split the batch between the cores; this
Python loop is their reference, and the path for other devices and fp64. Greedy and beam search of this decoder
run whole in the kernels too (``fed_attention_search``; ``s2s/kernels/search.cpp``), with the Python search of
``s2s.search`` over this loop as their reference.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from s2s import kernels
from s2s.modules.recurrence import (
    accumulation_dtype,
    cast_weight,
    gru_cell,
    gru_cell_backward,
    tanh_backward,
    weight_gradient,
)
from s2s.tokenizer import BOS, EOS, PAD


class Weights:
    """The loop's parameters in the dtype of the matrix products (casts reused within a search)."""

    def __init__(self, w_if, w_hh, b_hh, w_query, energy, w_combine, b_combine, gate_w, gate_b, dtype):
        # element-wise work and saved activations: fp32 (or the parameters' fp64, for gradient checks)
        self.acc = acc = accumulation_dtype(w_hh)
        self.dtype = dtype = acc if dtype == torch.float32 else dtype
        cast = lambda w: None if w is None else cast_weight(w, dtype)  # noqa: E731
        self.w_if, self.w_hh, self.w_query, self.w_combine = cast(w_if), cast(w_hh), cast(w_query), cast(w_combine)
        self.w_if_t, self.w_hh_t, self.w_combine_t = self.w_if.t(), self.w_hh.t(), self.w_combine.t()
        self.w_query_t = None if w_query is None else self.w_query.t()
        self.b_hh, self.b_combine = b_hh.to(acc), b_combine.to(acc)
        self.energy = None if energy is None else energy.to(acc).view(-1)  # [Q]
        # the context gate is one dot product per row, computed in fp32 as the attention scores are
        self.gate_w = None if gate_w is None else gate_w.to(acc).view(-1)  # [H]
        self.gate_b = None if gate_b is None else gate_b.to(acc).view(-1)  # [1]
        self.hidden = w_hh.size(1)


class Activations:
    """What the forward saves for the backward, preallocated for all T steps (no per-step lists to stack):
    ``hs`` and ``fs`` hold T + 1 states and fed vectors, the initial ones first (``hs_t`` and ``fs_t`` are the
    weight gradients' inputs, here the same tensors)."""

    def __init__(self, steps, batch, hidden, source, query, context, bahdanau, gated, like):
        new = lambda *shape: like.new_empty(steps, *shape)  # noqa: E731
        self.hs, self.fs = like.new_empty(steps + 1, batch, hidden), like.new_empty(steps + 1, batch, hidden)
        self.hs_t, self.fs_t = self.hs, self.fs
        self.rz, self.n, self.gh = new(batch, 2 * hidden), new(batch, hidden), new(batch, 3 * hidden)
        self.energy = new(batch, source, query) if bahdanau else None
        self.a, self.joined = new(batch, source), new(batch, hidden + context)
        self.beta = new(batch) if gated else None


def step(t, x, keys, values, pad, w: Weights, saved: Activations) -> None:
    """Decoder position t for the whole batch: x [B, 3H] its precomputed input gates, keys [B, S, Q],
    values [B, S, D], pad [B, S] True at padding. Reads state t of ``saved``, writes step t and state t + 1."""
    dt = w.dtype
    h, f = saved.hs[t], saved.fs[t]
    gi = torch.add(x, torch.mm(f.to(dt), w.w_if_t))  # [B, 3H]
    gh = torch.add(torch.mm(h.to(dt), w.w_hh_t), w.b_hh, out=saved.gh[t])  # [B, 3H]
    h_new = gru_cell(gi, gh, h, saved.rz[t], saved.n[t], saved.hs[t + 1])
    # rows of one source are consecutive (N of them in beam search, one in training): they read it together
    sources, source_len = pad.shape
    per_source = h_new.size(0) // sources
    if w.energy is not None:  # bahdanau: additive scores
        query = torch.mm(h_new.to(dt), w.w_query_t).view(sources, per_source, 1, -1)  # [B, N, 1, Q]
        energy = saved.energy[t].view(sources, per_source, source_len, -1)  # [B, N, S, Q]
        torch.add(keys.unsqueeze(1), query, out=energy).tanh_()
        scores = torch.mv(energy.view(-1, energy.size(-1)), w.energy).view(sources, per_source, source_len)
    else:  # luong: multiplicative scores against the (projected) keys
        scores = torch.bmm(h_new.view(sources, per_source, -1), keys.transpose(1, 2))  # [B, N, S]
    attention = saved.a[t]  # [B·N, S]
    attention.copy_(torch.softmax(scores.masked_fill_(pad.unsqueeze(1), float("-inf")), dim=-1).view_as(attention))
    context = torch.bmm(attention.view(sources, per_source, -1), values).view(h_new.size(0), -1)  # [B·N, D]
    if w.gate_w is not None:
        beta = torch.sigmoid(torch.mv(h_new, w.gate_w).add_(w.gate_b), out=saved.beta[t])  # [B·N]
        context = context * beta.unsqueeze(1)
    joined = torch.cat([h_new, context], dim=1, out=saved.joined[t])  # [B, H + D]
    torch.tanh(torch.add(torch.mm(joined.to(dt), w.w_combine_t), w.b_combine), out=saved.fs[t + 1])


class FedAttentionGRU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x,
        h0,
        f0,
        keys,
        values,
        mask,
        w_if,
        w_hh,
        b_hh,
        w_query,
        energy,
        w_combine,
        b_combine,
        gate_w,
        gate_b,
        dtype,
        training,
    ):
        """x [B, T, 3H] input gates of every position; h0, f0 [B, H]; keys [B, S, Q]; values [B, S, D]
        → attentional vectors [B, T, H], attention weights [B, T, S], the last state [B, H]."""
        w = Weights(w_if, w_hh, b_hh, w_query, energy, w_combine, b_combine, gate_w, gate_b, dtype)
        ctx.input_dtypes = (x.dtype, h0.dtype, keys.dtype, values.dtype)
        acc = w.acc
        keys, values = keys.to(acc), values.to(acc)
        # training only: search has a kernel of its own (fed_attention_search); a lone decoding step stays here
        ctx.compiled = training and h0.size(0) == keys.size(0) and kernels.usable(keys, acc, w.dtype)
        if ctx.compiled:  # x goes in the products' dtype, as autocast's input projection made it
            saved = forward_compiled(x, h0.to(acc), f0.to(acc), keys, values, mask, w)
        else:
            x = x.to(acc)
            batch, steps = x.shape[:2]
            bahdanau, gated = w.energy is not None, w.gate_w is not None
            saved = Activations(
                steps, batch, w.hidden, keys.size(1), keys.size(2), values.size(2), bahdanau, gated, keys
            )
            saved.hs[0], saved.fs[0] = h0, f0
            with torch.autocast(x.device.type, enabled=False):  # the dtypes here are chosen by hand
                for t in range(steps):
                    step(t, x[:, t], keys, values, ~mask, w, saved)
        ctx.weights, ctx.saved = w, saved
        ctx.save_for_backward(keys, values)
        outputs = saved.fs[1:].transpose(0, 1)  # [B, T, H]
        weights = saved.a.transpose(0, 1)  # [B, T, S]
        return outputs, weights, saved.hs[-1].clone()

    @staticmethod
    def backward(ctx, d_outputs, d_weights, d_last):
        keys, values = ctx.saved_tensors
        w, s = ctx.weights, ctx.saved
        if s.a.size(1) != keys.size(0):
            raise RuntimeError("the input-fed loop trains on one decoder row per source, not several")
        dt, acc = w.dtype, w.acc
        d_outputs = d_outputs.to(acc).transpose(0, 1)  # [T, B, H]
        d_last = None if d_last is None else d_last.to(acc)
        # a loss on the weights themselves (the doubly stochastic attention penalty): [T, B, S]
        d_a = None if d_weights is None else d_weights.to(acc).transpose(0, 1).contiguous()
        backward = backward_compiled if ctx.compiled else backward_loop
        g, d_keys, g_energy, d_b_hh, d_b_combine, dh, df = backward(d_outputs, d_last, d_a, keys, values, w, s)
        # the weight gradients: one product each over all T × B rows
        g_w_if = weight_gradient(flat(g.gi), flat(s.fs_t[:-1]), dt)
        g_w_hh = weight_gradient(flat(g.gh), flat(s.hs_t[:-1]), dt)
        g_w_combine = weight_gradient(flat(g.pre), flat(s.joined), dt)
        d_values = torch.bmm(s.a.permute(1, 2, 0), g.context.transpose(0, 1))  # [B, S, D]
        g_w_query = None
        if w.energy is not None:
            g_w_query = weight_gradient(flat(g.query), flat(s.hs_t[1:]), dt)
        g_gate_w = g_gate_b = None
        if w.gate_w is not None:  # fp32 vectors: as the forward's dot products
            g_gate_w = torch.mv(flat(s.hs[1:]).t(), g.gate.reshape(-1)).view(1, -1)
            g_gate_b = g.gate.sum().view(1)
        x_dtype, h_dtype, k_dtype, v_dtype = ctx.input_dtypes
        return (
            g.gi.transpose(0, 1).to(x_dtype),
            dh.to(h_dtype),
            df,
            d_keys.to(k_dtype),
            d_values.to(v_dtype),
            None,
            g_w_if,
            g_w_hh,
            d_b_hh,
            g_w_query,
            g_energy,
            g_w_combine,
            d_b_combine,
            g_gate_w,
            g_gate_b,
            None,
            None,
        )


def backward_loop(d_outputs, d_last, d_a, keys, values, w: Weights, s: Activations):
    """The backward loop in Python: d_outputs [T, B, H], d_last [B, H] or None, d_a [T, B, S] (a loss's own
    gradient of the attention weights) or None → the per-step gradients, the keys', the energy vector's and the two
    biases' gradients, and those of h0 and f0."""
    dt, acc, hidden = w.dtype, w.acc, w.hidden
    steps, batch = s.a.shape[:2]
    dh = torch.zeros_like(s.hs[0]) if d_last is None else d_last
    df = torch.zeros_like(dh)
    g = Gradients(steps, batch, hidden, keys.size(2), values.size(2), w.gate_w is not None, keys)
    d_keys = torch.zeros_like(keys) if w.energy is not None else None
    for t in reversed(range(steps)):
        pre = tanh_backward(d_outputs[t] + df, s.fs[t + 1], out=g.pre[t])  # through o = tanh(...)
        d_joined = torch.mm(pre.to(dt), w.w_combine)  # [B, H + D]
        dc = g.context[t].copy_(d_joined[:, hidden:])
        dh_new = torch.add(dh, d_joined[:, :hidden])
        if w.gate_w is not None:  # through c_t β_t: β's pre-activation gets (1 - β) Σ dc ⊙ (β c_t)
            beta = s.beta[t]
            d_gate = torch.mul((dc * s.joined[t][:, hidden:]).sum(1), 1.0 - beta, out=g.gate[t])  # [B]
            dh_new.addr_(d_gate, w.gate_w)
            dc.mul_(beta.unsqueeze(1))
        a = s.a[t]
        da = torch.bmm(values, dc.unsqueeze(2)).squeeze(2)  # [B, S]
        if d_a is not None:
            da += d_a[t]
        ds = torch.mul(a, da - (a * da).sum(1, keepdim=True), out=g.scores[t])  # softmax backward
        if w.energy is not None:
            de = tanh_backward(ds.unsqueeze(2) * w.energy, s.energy[t])  # [B, S, Q]
            d_keys += de
            dq = torch.sum(de, 1, out=g.query[t])  # [B, Q]
            dh_new += torch.mm(dq.to(dt), w.w_query)
        else:
            dh_new += torch.bmm(ds.unsqueeze(1), keys).squeeze(1)
        dh = gru_cell_backward(dh_new, s.hs[t], s.rz[t], s.n[t], s.gh[t, :, 2 * hidden :], g.gi[t], g.gh[t])
        dh.add_(torch.mm(g.gh[t].to(dt), w.w_hh))
        df = torch.mm(g.gi[t].to(dt), w.w_if).to(acc)
    g_energy = None
    if w.energy is not None:
        g_energy = torch.mv(s.energy.view(-1, s.energy.size(-1)).t(), g.scores.reshape(-1)).view(1, -1)  # [1, Q]
    else:
        d_keys = torch.bmm(g.scores.permute(1, 2, 0), s.hs[1:].transpose(0, 1))  # [B, S, Q]
    return g, d_keys, g_energy, flat(g.gh).sum(0), flat(g.pre).sum(0), dh, df


def forward_compiled(x, h0, f0, keys, values, mask, w: Weights) -> SimpleNamespace:
    """The forward loop in the compiled kernels: what ``Activations`` holds, with gh_n (the n part of the hidden
    gates) and the Bahdanau queries instead of the [T, B, S, Q] energies, which the backward recomputes, and with
    the states and fed vectors also in the products' dtype (``hs_t``, ``fs_t``), for the weight gradients."""
    bahdanau, gated = w.energy is not None, w.gate_w is not None
    hs, fs, hs_t, fs_t, rz, n, gh_n, query, a, joined, beta = kernels.ops().fed_attention_forward(
        x.to(w.dtype).contiguous(),
        h0.contiguous(),
        f0.contiguous(),
        keys.contiguous(),
        values.contiguous(),
        mask.contiguous(),
        *(t.detach().contiguous() for t in (w.w_if, w.w_hh, w.b_hh)),
        w.w_query.detach().contiguous() if bahdanau else None,
        w.energy.detach().contiguous() if bahdanau else None,
        w.w_combine.detach().contiguous(),
        w.b_combine.detach().contiguous(),
        w.gate_w.detach().contiguous() if gated else None,
        w.gate_b.detach().contiguous() if gated else None,
        kernels.parts(),
    )
    return SimpleNamespace(
        hs=hs, fs=fs, hs_t=hs_t, fs_t=fs_t, rz=rz, n=n, gh_n=gh_n, query=query, a=a, joined=joined, beta=beta
    )


def backward_compiled(d_outputs, d_last, d_a, keys, values, w: Weights, s: SimpleNamespace):
    """``backward_loop`` in the compiled kernels (the per-step gradients in the products' dtype)."""
    bahdanau, gated = w.energy is not None, w.gate_w is not None
    g_gi, g_gh, g_pre, g_query, g_context, g_gate, d_keys, g_energy, d_b_hh, d_b_combine, dh, df = (
        kernels.ops().fed_attention_backward(
            d_outputs.contiguous(),
            d_last,
            s.hs,
            s.fs,
            s.rz,
            s.n,
            s.gh_n,
            s.query,
            s.a,
            keys.contiguous(),
            values.contiguous(),
            *(t.detach().contiguous() for t in (w.w_if, w.w_hh)),
            w.w_query.detach().contiguous() if bahdanau else None,
            w.energy.detach().contiguous() if bahdanau else None,
            w.w_combine.detach().contiguous(),
            w.gate_w.detach().contiguous() if gated else None,
            s.beta if gated else None,
            s.joined if gated else None,
            d_a,
            kernels.parts(),
        )
    )
    g = SimpleNamespace(gi=g_gi, gh=g_gh, pre=g_pre, context=g_context, query=g_query, gate=g_gate)
    return g, d_keys, g_energy.view(1, -1) if bahdanau else None, d_b_hh, d_b_combine, dh, df


class Gradients:
    """Per-step gradients the weight gradients are made of, filled by the backward loop."""

    def __init__(self, steps, batch, hidden, query, context, gated, like):
        new = lambda *shape: like.new_empty(steps, batch, *shape)  # noqa: E731
        self.gi, self.gh, self.pre = new(3 * hidden), new(3 * hidden), new(hidden)
        self.scores, self.context, self.query = new(like.size(1)), new(context), new(query)
        self.gate = new() if gated else None  # the gradient of β's pre-activation


def flat(x: torch.Tensor) -> torch.Tensor:
    """[T, B, ...] → [T·B, ...]"""
    return x.reshape(-1, *x.shape[2:])


def fed_attention_gru(x, h0, f0, keys, values, mask, rnn, attention, combine, gate, dtype):
    """The loop over modules' parameters: ``rnn`` an ``nn.GRU`` of one layer whose input is [embedding; feed],
    ``attention`` an ``Attention``, ``combine`` the ``nn.Linear`` over [h; context], ``gate`` the context gate's
    ``nn.Linear`` from h to one value, or None. With gradients enabled (training) the compiled kernels run it where
    they can."""
    embedding_size = rnn.input_size - rnn.hidden_size
    w_if = rnn.weight_ih_l0[:, embedding_size:]
    bahdanau = attention.kind == "bahdanau"
    return FedAttentionGRU.apply(
        x,
        h0,
        f0,
        keys,
        values,
        mask,
        w_if,
        rnn.weight_hh_l0,
        rnn.bias_hh_l0,
        attention.query_proj.weight if bahdanau else None,
        attention.energy.weight if bahdanau else None,
        combine.weight,
        combine.bias,
        None if gate is None else gate.weight,
        None if gate is None else gate.bias,
        dtype,
        torch.is_grad_enabled(),
    )


def input_gates(embedded: torch.Tensor, rnn) -> torch.Tensor:
    """The embedded words' part of every position's input gates, for all positions at once: [B, T, 3H]."""
    embedding_size = rnn.input_size - rnn.hidden_size
    return F.linear(embedded, rnn.weight_ih_l0[:, :embedding_size], rnn.bias_ih_l0)


def fed_attention_search(
    memory, h0, f0, limit, embed, rnn, attention, combine, gate, output, dtype, beam, alpha, nbest, weights
):
    """Greedy search (a beam of one) or beam search of the input-fed decoder in the compiled kernels, on its
    modules' parameters (``embed``, ``rnn``, ``attention``, ``combine``, the context ``gate`` or None, ``output``)
    with products in ``dtype``:
    ``memory`` one row per source, h0 and f0 [B, H] the initial state and fed vector, ``limit`` [B] the longest
    outputs (EOS included) → the ``nbest`` best of each source, best first: tokens [B, nbest, L] (EOS, then PAD),
    their scores [B, nbest] (sums of log-probabilities) and, with ``weights``, their attention [B, nbest, L, S]."""
    embedding_size = rnn.input_size - rnn.hidden_size
    products = lambda w: cast_weight(w, dtype).detach().contiguous()  # noqa: E731
    vector = lambda w: w.detach().float().reshape(-1).contiguous()  # noqa: E731
    bahdanau = attention.kind == "bahdanau"
    return kernels.ops().fed_attention_search(
        memory.keys.contiguous(),
        memory.states.contiguous(),
        memory.mask.contiguous(),
        h0.float().contiguous(),
        f0.float().contiguous(),
        limit.long().contiguous(),
        products(embed.weight),
        products(rnn.weight_ih_l0[:, :embedding_size]),
        products(rnn.bias_ih_l0),  # autocast casts a linear layer's bias with its weight
        products(rnn.weight_ih_l0[:, embedding_size:]),
        products(rnn.weight_hh_l0),
        vector(rnn.bias_hh_l0),
        products(attention.query_proj.weight) if bahdanau else None,
        vector(attention.energy.weight) if bahdanau else None,
        products(combine.weight),
        vector(combine.bias),
        None if gate is None else vector(gate.weight),
        None if gate is None else vector(gate.bias),
        products(output.weight),
        products(output.bias),
        beam,
        alpha,
        nbest,
        weights,
        BOS,
        EOS,
        PAD,
        kernels.parts(),
    )
