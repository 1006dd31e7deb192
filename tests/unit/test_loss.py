"""The fused output layer + label-smoothed cross-entropy equals nn.Linear followed by F.cross_entropy: loss and
every gradient, with and without smoothing, when a target's probability underflows, and close under bf16; in fp32
the compiled kernel (s2s/kernels/loss.cpp) does too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2s.loss import projected_cross_entropy
from tests.helpers import needs_kernels

N, H, V = 30, 16, 50


def layer_and_inputs(dtype=torch.float64):
    torch.manual_seed(0)
    output = torch.nn.Linear(H, V).to(dtype)
    hidden = torch.randn(N, H, dtype=dtype, requires_grad=True)
    target = torch.randint(0, V, (N,))
    return output, hidden, target


def loss_and_grads(loss_fn, output, hidden):
    output.zero_grad()
    hidden.grad = None
    loss = loss_fn()
    loss.backward()
    return loss.detach().double(), [g.clone().double() for g in (hidden.grad, output.weight.grad, output.bias.grad)]


def reference(output, hidden, target, smoothing):
    return lambda: F.cross_entropy(output(hidden).float(), target, label_smoothing=smoothing, reduction="sum")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("underflow", [False, True], ids=["plain", "p_y-underflows"])
def test_fused_loss_and_gradients_equal_linear_then_cross_entropy(smoothing, underflow):
    output, hidden, target = layer_and_inputs()
    if underflow:  # row 0 puts all mass on another class: p_y = e^-500, far below what the softmax can hold
        with torch.no_grad():
            output.weight[target[0] + 1 if target[0] + 1 < V else 0] += 500 * hidden[0] / hidden[0].square().sum()
    fused = loss_and_grads(lambda: projected_cross_entropy(hidden, output, target, smoothing), output, hidden)
    expected = loss_and_grads(
        lambda: F.cross_entropy(output(hidden), target, label_smoothing=smoothing, reduction="sum"), output, hidden
    )
    torch.testing.assert_close(fused[0], expected[0])
    for got, want in zip(fused[1], expected[1], strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("underflow", [False, True], ids=["plain", "p_y-underflows"])
def test_the_compiled_loss_and_gradients_equal_linear_then_cross_entropy_in_fp32(smoothing, underflow):
    needs_kernels()
    output, hidden, target = layer_and_inputs(torch.float32)
    if underflow:  # row 0: p_y = e^-200, which no fp32 softmax can hold; the kernel takes log-sum-exp directly
        with torch.no_grad():
            output.weight[target[0] + 1 if target[0] + 1 < V else 0] += 200 * hidden[0] / hidden[0].square().sum()
    fused = loss_and_grads(lambda: projected_cross_entropy(hidden, output, target, smoothing), output, hidden)
    expected = loss_and_grads(reference(output, hidden, target, smoothing), output, hidden)
    torch.testing.assert_close(fused[0], expected[0], rtol=1e-5, atol=1e-4)
    for got, want in zip(fused[1], expected[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # the big weight row: fp32 rounding


def test_the_compiled_loss_refuses_a_target_outside_the_vocabulary():
    needs_kernels()
    output, hidden, target = layer_and_inputs(torch.float32)
    target[3] = V
    with pytest.raises(RuntimeError, match=f"target {V} is outside the vocabulary of {V}"):
        projected_cross_entropy(hidden, output, target, 0.1)


def test_under_bf16_autocast_the_fused_loss_stays_close_to_fp32():
    output, hidden, target = layer_and_inputs(torch.float32)
    exact = loss_and_grads(reference(output, hidden, target, 0.1), output, hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = loss_and_grads(lambda: projected_cross_entropy(hidden, output, target, 0.1), output, hidden)
    assert abs(bf16[0] - exact[0]) / exact[0] < 0.01
    for got, want in zip(bf16[1], exact[1], strict=True):
        assert (got - want).norm() / want.norm() < 0.02


def test_without_gradients_the_loss_is_computed_exactly_in_fp32():
    output, hidden, target = layer_and_inputs(torch.float32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = projected_cross_entropy(hidden, output, target, 0.1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(output(hidden).float(), target, label_smoothing=0.1, reduction="sum")
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
