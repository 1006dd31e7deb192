"""The output layer and its label-smoothed cross-entropy, fused for training.

Over a batch's [N, V] logits (N target tokens, an 8k vocabulary), ``F.cross_entropy`` after an ``nn.Linear`` makes
a dozen passes over memory: forward, the log-softmax, the smoothing sum; backward, the softmax again, the gradient,
the bias's column sums and, under bf16 on the CPU, copies of the whole matrix to fp32 and back; in bf16 on the CPU
that costs more than the recurrent decoder itself. Training backpropagates right after the forward, so here the
softmax is taken once, in the logits' own dtype, and kept. Its gradient, softmax minus the smoothed one-hot target,
is never formed: the one-hot and the uniform smoothing term are a gather and a rank-one update of the input and
weight gradients, so the [N, V] matrix is only read by the two products of the backward.

The loss is label smoothing as PyTorch defines it, (1 - ε) · NLL + ε · mean over the vocabulary of -log p, which per
token is ``lse - (1 - ε) x_y - ε mean(x)`` with x the logits and ``lse`` their log-sum-exp. ``lse`` is read off the
softmax as ``x_y - log p_y``; where p_y is too small for that (below 1e-30) the row's lse is computed directly. The
sum of all logits, for the smoothing term, is (Σ_n h_n) · (Σ_v w_v) + N Σ_v b_v: no pass over the matrix.

Where ``s2s.kernels`` says so (on the CPU with fp32 parameters and fp32 or bf16 products, once built), the compiled
kernel of ``s2s/kernels/loss.cpp`` goes further: one pass per row gives the loss and writes the logits' gradient
G = softmax - (1 - ε) onehot(y) - ε / V over the logits, with the bias gradient summed on the way, and the backward
is the two products with G.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s import kernels

TINY = 1e-30  # below this, log p_y read off the softmax is not trusted
# oneDNN, which runs the CPU's bf16 products, compiles a kernel for each new matrix shape, which is slow; the number
# of target tokens N differs every batch, so N is padded up to a multiple of this
ROW_BUCKET = 128


class ProjectedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, smoothing: float, dtype: torch.dtype):
        """hidden [N, H], weight [V, H], bias [V], target [N] → the summed loss (a scalar in fp32, or fp64)."""
        acc = torch.promote_types(weight.dtype, torch.float32)
        dtype = acc if dtype == torch.float32 else dtype
        vocab, column, rows = weight.size(0), target.unsqueeze(1), hidden.size(0)
        x, w = hidden.to(dtype), weight.to(dtype)
        if dtype in (torch.bfloat16, torch.float16) and hidden.device.type == "cpu":
            x = F.pad(x, (0, 0, 0, -rows % ROW_BUCKET))  # zero rows, whose probabilities are zeroed below
        ctx.smoothing, ctx.acc, ctx.rows = smoothing, acc, rows
        ctx.compiled = kernels.usable(hidden, acc, dtype)
        if ctx.compiled:  # the loss and the logits' gradient G in one pass per row (s2s/kernels/loss.cpp)
            logits = torch.mm(x, w.t())  # [N', V], becoming G
            loss, ctx.d_bias = kernels.ops().cross_entropy_gradient(
                logits, bias.detach().to(acc).contiguous(), target.contiguous(), smoothing, kernels.parts()
            )
            ctx.save_for_backward(logits, x, w)
            return loss
        logits = torch.addmm(bias.to(dtype), x, w.t())  # [N', V]
        probs = torch.softmax(logits, dim=-1)
        probs[rows:] = 0.0
        picked = logits[:rows].gather(1, column).squeeze(1).to(acc)  # x_y [N]
        p_picked = probs[:rows].gather(1, column).squeeze(1).to(acc)
        del logits  # freed now: rows whose p_y underflowed recompute theirs below
        lse = picked - torch.log(p_picked.clamp(min=TINY))
        unsure = p_picked < TINY
        if bool(unsure.any()):
            rows = hidden[unsure].to(acc)
            lse[unsure] = torch.logsumexp(rows @ weight.to(acc).t() + bias.to(acc), dim=-1)
        loss = lse.sum() - (1.0 - smoothing) * picked.sum()
        if smoothing:
            logit_sum = hidden.to(acc).sum(0) @ weight.to(acc).sum(0) + target.numel() * bias.to(acc).sum()
            loss = loss - smoothing / vocab * logit_sum
        ctx.save_for_backward(probs, x, w, hidden, weight, target)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        """With G = softmax - (1 - ε) onehot(y) - ε / V:  d hidden = G W,  d W = Gᵀ hidden,  d b = Gᵀ 1."""
        if ctx.compiled:
            return compiled_backward(ctx, grad_loss)
        probs, x, w, hidden, weight, target = ctx.saved_tensors
        eps, acc = ctx.smoothing, ctx.acc
        vocab, count = weight.size(0), target.numel()
        hidden, weight = hidden.to(acc), weight.to(acc)
        d_hidden = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_hidden = torch.mm(probs, w)[:count].to(acc)  # [N, H]
            d_hidden.sub_(weight[target], alpha=1.0 - eps)
            if eps:
                d_hidden.sub_(weight.sum(0), alpha=eps / vocab)
            d_hidden.mul_(grad_loss)
        if ctx.needs_input_grad[1]:
            d_weight = torch.mm(probs.t(), x).to(acc)  # [V, H]
            d_weight.index_add_(0, target, hidden, alpha=eps - 1.0)
            if eps:
                d_weight.sub_(hidden.sum(0), alpha=eps / vocab)
            d_weight.mul_(grad_loss)
        if ctx.needs_input_grad[2]:
            d_bias = torch.mm(probs.new_ones(1, probs.size(0)), probs)[0].to(acc)  # column sums, as one product
            d_bias.index_add_(0, target, d_bias.new_full((count,), eps - 1.0))
            if eps:
                d_bias.sub_(eps * count / vocab)
            d_bias.mul_(grad_loss)
        return d_hidden, d_weight, d_bias, None, None, None


def compiled_backward(ctx, grad_loss):
    """The backward when the kernel left G itself: the two products and the bias gradient it summed."""
    g, x, w = ctx.saved_tensors
    d_hidden = d_weight = d_bias = None
    if ctx.needs_input_grad[0]:
        d_hidden = torch.mm(g, w)[: ctx.rows].to(ctx.acc).mul_(grad_loss)
    if ctx.needs_input_grad[1]:
        d_weight = torch.mm(g.t(), x).to(ctx.acc).mul_(grad_loss)
    if ctx.needs_input_grad[2]:
        d_bias = ctx.d_bias.mul(grad_loss)
    return d_hidden, d_weight, d_bias, None, None, None


def projected_cross_entropy(
    hidden: torch.Tensor, output: torch.nn.Linear, target: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of ``output(hidden)`` (hidden [N, H], an output layer to V classes)
    against target [N]: ``F.cross_entropy(output(hidden).float(), target, label_smoothing=smoothing,
    reduction="sum")`` to the precision of the autocast dtype. Without gradients (validation) it is exactly that."""
    if not torch.is_grad_enabled():
        return F.cross_entropy(output(hidden).float(), target, label_smoothing=smoothing, reduction="sum")
    dtype = kernels.products_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        return ProjectedCrossEntropy.apply(hidden, output.weight, output.bias, target, smoothing, dtype)
