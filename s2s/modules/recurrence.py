"""GRU recurrences with backpropagation through time written out by hand, for the CPU.

Left to autograd (or to ``nn.GRU``'s CPU kernel, which records every cell), a recurrent step over a 64-sentence
batch costs more in bookkeeping than in arithmetic: each step records dozens of operations and computes its own
small weight gradients. Here a forward loop saves only the activations the backward needs, in buffers allocated
once; the backward loop carries the state's gradient from step to step; and every weight gradient is one matrix
product over all steps at the end, as cuDNN does for its fused RNNs. The input side of each step (the input
projected by W_ih, which does not depend on the previous state) is computed by the caller for all positions at
once, so autograd handles it as one large product.

The cell follows PyTorch's GRU (gate order r, z, n; the same weights as ``nn.GRU``):

    gh = W_hh h + b_hh;   r, z = σ(gi_r + gh_r), σ(gi_z + gh_z);   n = tanh(gi_n + r ⊙ gh_n);   h' = n + z ⊙ (h - n)

Matrix products run in ``dtype`` (bf16 under autocast); gates and saved activations stay in fp32 (fp64 when the
parameters are, for gradient checks). ``gru_cell`` and ``gru_cell_backward`` serve both the encoder's
bidirectional layer below and the decoder's input-fed loop (``input_feeding``).

Where ``s2s.kernels`` says so (on the CPU with fp32 or bf16 products, once built), ``StackedGRU`` runs its loops in
the compiled kernels (the same equations, each step's element-wise work fused, one direction or block of rows per
core); the Python loops here are their reference and the path elsewhere.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch

from s2s import kernels

# while a search runs: (base parameter id, dtype, offset, shape, stride) → (weak reference to the base, the cast)
_casts: dict[tuple, tuple[weakref.ref, torch.Tensor]] | None = None


@contextmanager
def reuse_weight_casts():
    """Within this block, ``cast_weight`` casts each weight once. Search wraps its loop in it: decoding runs the
    loops once per output token with unchanged weights, and casting them at every token is a measurable part of
    beam search. Outside it nothing is cached, because weights change in place (fused optimizers do not even bump a
    tensor's version counter), so no cast can outlive the search that made it."""
    global _casts
    outer, _casts = _casts, {} if _casts is None else _casts
    try:
        yield
    finally:
        _casts = outer


def cast_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` (a parameter or a slice of one) in ``dtype``; cast once per ``reuse_weight_casts`` block."""
    if weight.dtype == dtype:
        return weight
    if _casts is None:
        return weight.to(dtype)
    base = weight if weight._base is None else weight._base
    key = (id(base), dtype, weight.storage_offset(), tuple(weight.shape), weight.stride())
    hit = _casts.get(key)
    if hit is not None and hit[0]() is base:
        return hit[1]
    cast = weight.detach().to(dtype)
    _casts[key] = (weakref.ref(base), cast)
    return cast


def tanh_backward(grad: torch.Tensor, output: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """grad · (1 - output²): the gradient through output = tanh(·), in one kernel."""
    if out is None:
        return torch.ops.aten.tanh_backward(grad, output)
    return torch.ops.aten.tanh_backward.grad_input(grad, output, grad_input=out)


def sigmoid_backward(grad: torch.Tensor, output: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """grad · output · (1 - output): the gradient through output = σ(·), in one kernel."""
    return torch.ops.aten.sigmoid_backward.grad_input(grad, output, grad_input=out)


def accumulation_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.promote_types(weight.dtype, torch.float32)


def weight_gradient(grads: torch.Tensor, inputs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Σ over rows of grads ⊗ inputs: [..., R, O] and [..., R, I] → [..., O, I], one product over all steps,
    taken in the step's dtype like autocast's weight gradients (on the CPU, bf16 products are much faster)."""
    product = torch.matmul(grads.to(dtype).transpose(-1, -2), inputs.to(dtype))
    return product.to(torch.promote_types(grads.dtype, torch.float32))


def gru_cell(gi, gh, h, rz_out, n_out, h_out) -> torch.Tensor:
    """The element-wise part of a GRU step, for any leading dimensions: input gates gi [..., 3H], hidden gates
    gh [..., 3H] (bias included), state h [..., H] → the new state, written to ``h_out``; r and z go to
    ``rz_out`` [..., 2H] and n to ``n_out`` [..., H] for the backward."""
    hidden = h.size(-1)
    rz = torch.sigmoid(torch.add(gi[..., : 2 * hidden], gh[..., : 2 * hidden]), out=rz_out)
    r, z = rz[..., :hidden], rz[..., hidden:]
    n = torch.tanh(torch.addcmul(gi[..., 2 * hidden :], r, gh[..., 2 * hidden :]), out=n_out)
    return torch.addcmul(n, z, h - n, out=h_out)


def gru_cell_backward(dh_new, h, rz, n, gh_n, d_gi_out, d_gh_out) -> torch.Tensor:
    """The gradient of ``gru_cell``: from dh_new (of the new state) write the gradients of the input gates to
    ``d_gi_out`` and of the hidden gates to ``d_gh_out``; return the part of dh (of the old state) that flows
    around the gates (the caller adds d_gh · W_hh). ``gh_n`` is the n part of the hidden gates [..., H]."""
    hidden = h.size(-1)
    r, z = rz[..., :hidden], rz[..., hidden:]
    dn = tanh_backward(torch.addcmul(dh_new, dh_new, z, value=-1), n, out=d_gi_out[..., 2 * hidden :])
    d_rz = torch.cat([dn * gh_n, dh_new * (h - n)], -1)  # [..., 2H] before the sigmoid
    sigmoid_backward(d_rz, rz, out=d_gi_out[..., : 2 * hidden])
    d_gh_out[..., : 2 * hidden] = d_gi_out[..., : 2 * hidden]
    torch.mul(dn, r, out=d_gh_out[..., 2 * hidden :])
    return dh_new * z


class StackedGRU(torch.autograd.Function):
    """D independent GRUs of one layer run side by side (the two directions of a bidirectional layer): one
    batched product per step serves all of them."""

    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, dtype):
        """gi [S, D, B, 3H] input gates of every step, h0 [D, B, H], w_hh [D, 3H, H], b_hh [D, 3H]
        → states [S, D, B, H]."""
        acc = accumulation_dtype(w_hh)
        dtype = acc if dtype == torch.float32 else dtype
        ctx.dtype, ctx.input_dtypes = dtype, (gi.dtype, h0.dtype)
        ctx.compiled = kernels.usable(gi, acc, dtype)
        if ctx.compiled:  # the gates in the products' dtype, as autocast's input projection made them
            w, b = cast_weight(w_hh, dtype).detach().contiguous(), b_hh.detach().to(acc).contiguous()
            gi, h0 = gi.to(dtype).contiguous(), h0.to(acc).contiguous()
            hs, hs_t, rz, n, gh_n = kernels.ops().gru_forward(gi, h0, w, b, kernels.parts())
        else:
            hs, rz, n, gh_n = gru_loop(gi.to(acc), h0.to(acc), w_hh, b_hh, dtype)
            hs_t = hs
        ctx.save_for_backward(w_hh, hs, rz, n, gh_n, hs_t)
        return hs[1:]

    @staticmethod
    def backward(ctx, d_states):
        w_hh, hs, rz, n, gh_n, hs_t = ctx.saved_tensors
        acc, dtype = hs.dtype, ctx.dtype
        w = cast_weight(w_hh, dtype)  # [D, 3H, H]
        d_states = d_states.to(acc)
        if ctx.compiled:
            d_states, w = d_states.contiguous(), w.detach().contiguous()
            d_gi, d_gh, d_b_hh, dh = kernels.ops().gru_backward(d_states, hs, rz, n, gh_n, w, kernels.parts())
        else:
            d_gi, d_gh, dh = gru_loop_backward(d_states, hs, rz, n, gh_n, w, dtype)
            d_b_hh = d_gh.sum((0, 2))
        # [D, 3H, S·B] × [D, S·B, H]: each direction's weight gradient in one product
        by_direction = d_gh.transpose(0, 1).flatten(1, 2)  # [D, S·B, 3H]
        d_w_hh = weight_gradient(by_direction, hs_t[:-1].transpose(0, 1).flatten(1, 2), dtype)
        gi_dtype, h_dtype = ctx.input_dtypes
        return d_gi.to(gi_dtype), dh.to(h_dtype), d_w_hh, d_b_hh, None


def gru_loop(gi, h0, w_hh, b_hh, dtype):
    """The forward loop in Python: gi [S, D, B, 3H], h0 [D, B, H] → the states hs [S + 1, D, B, H] (h0 first) and
    what the backward needs: r and z [S, D, B, 2H], n and the hidden gates' n part gh_n [S, D, B, H]."""
    steps, hidden = gi.size(0), h0.size(-1)
    w_t, bias = cast_weight(w_hh, dtype).transpose(1, 2), b_hh.to(gi.dtype).unsqueeze(1)  # [D, H, 3H], [D, 1, 3H]
    hs = gi.new_empty(steps + 1, *h0.shape)
    rz, n, gh = gi.new_empty(*gi.shape[:-1], 2 * hidden), gi.new_empty(steps, *h0.shape), torch.empty_like(gi)
    hs[0] = h0
    with torch.autocast(gi.device.type, enabled=False):
        for t in range(steps):
            torch.add(torch.bmm(hs[t].to(dtype), w_t), bias, out=gh[t])
            gru_cell(gi[t], gh[t], hs[t], rz[t], n[t], hs[t + 1])
    return hs, rz, n, gh[..., 2 * hidden :]


def gru_loop_backward(d_states, hs, rz, n, gh_n, w, dtype):
    """The backward loop in Python → the gradients of the input and hidden gates [S, D, B, 3H] and of h0."""
    d_gi = d_states.new_empty(*d_states.shape[:-1], 3 * d_states.size(-1))
    d_gh = torch.empty_like(d_gi)
    dh = torch.zeros_like(hs[0])
    for t in reversed(range(d_states.size(0))):
        dh_new = torch.add(d_states[t], dh)
        dh = gru_cell_backward(dh_new, hs[t], rz[t], n[t], gh_n[t], d_gi[t], d_gh[t])
        dh.add_(torch.bmm(d_gh[t].to(dtype), w))
    return d_gi, d_gh, dh


def stacked_gru(gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """``StackedGRU`` in the autocast dtype of the moment: gi [S, D, B, 3H], h0 [D, B, H] → states [S, D, B, H]."""
    return StackedGRU.apply(gi, h0, w_hh, b_hh, kernels.products_dtype(gi))
