"""The compiled CPU kernels compute what the Python loops compute: the encoder's GRU layers and the decoder's
input-fed attention loop, forward and backward, in fp32 and under bf16 autocast, on padded batches, however the
batch is split between threads. Where the kernels cannot be built these tests skip, saying why, unless
S2S_KERNELS=require, under which they fail (what s2s.kernels decides, and when, is tests/test_backend.py's)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from s2s import kernels
from s2s.modules.decoders import Memory
from s2s.modules.encoders import RNNEncoder
from tests.helpers import decoder_and_inputs, input_fed_decoder, needs_kernels, run

B, T, S, HIDDEN, VOCAB = 7, 6, 5, 24, 40
LENGTHS = torch.tensor([5, 2, 4, 1, 5, 3, 5])


@pytest.fixture
def loops(monkeypatch):
    """``loops(compiled, parts)``: choose the loops the next calls run, and into how many parts they split."""

    def choose(compiled: bool, parts: int = 1) -> None:
        monkeypatch.setattr(kernels, "available", lambda: compiled)
        monkeypatch.setattr(kernels, "parts", lambda: parts)

    return choose


def assert_all_close(got: list[torch.Tensor], expected: list[torch.Tensor], tolerance: float) -> None:
    assert len(got) == len(expected)
    for number, (a, b) in enumerate(zip(got, expected, strict=True)):
        scale = b.abs().max().clamp(min=1e-3)
        assert (a - b).abs().max() <= tolerance * scale, f"output {number} differs"


def flatten(outputs) -> list[torch.Tensor]:
    """``tests.helpers.run``'s outputs as one list of tensors."""
    logits, weights, state, states_grad, grads = outputs
    return [logits, weights, state.hidden.detach().float(), states_grad] + [grads[k].float() for k in sorted(grads)]


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_dot"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_decoder_kernels_compute_what_the_python_loop_computes(loops, attention, dtype):
    needs_kernels()
    decoder, states, prev = decoder_and_inputs(attention, torch.float32)
    loops(compiled=False)
    expected = flatten(run(decoder, True, states, prev, dtype))
    for parts in (1, 3):  # 3 parts of 4 rows: blocks of 2, 2 and none
        loops(compiled=True, parts=parts)
        # fp32: to rounding; bf16: a flipped rounding of one product input moves a value by a bf16 step
        got = flatten(run(decoder, True, states, prev, dtype))
        assert_all_close(got, expected, 1e-5 if dtype is None else 2e-2)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_encoder_kernels_compute_what_the_python_loop_computes(loops, bidirectional, dtype):
    needs_kernels()
    torch.manual_seed(0)
    encoder = RNNEncoder(VOCAB, 8, HIDDEN, 2, "gru", bidirectional, 0.0, False)
    src, lengths = torch.randint(4, VOCAB, (B, 7)), torch.tensor([7, 3, 5, 1, 6, 7, 2])

    def run() -> list[torch.Tensor]:
        encoder.zero_grad()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = encoder(src, lengths)
            loss = out.states.float().sin().sum() + out.summary.float().cos().sum()
        loss.backward()
        grads = [p.grad.float().clone() for _, p in sorted(encoder.named_parameters())]
        return [out.states.detach().float(), out.summary.detach().float(), *grads]

    loops(compiled=False)
    expected = run()
    for parts in (1, 2, 3):  # bidirectional: one direction per part, or each direction's rows split
        loops(compiled=True, parts=parts)
        assert_all_close(run(), expected, 1e-5 if dtype is None else 2e-2)


def test_search_keeps_the_python_loop_and_training_uses_the_kernels(monkeypatch):
    needs_kernels()
    torch.manual_seed(0)
    decoder = input_fed_decoder(summary_size=20, vocab_size=VOCAB, hidden_size=HIDDEN)
    calls = []
    forward = kernels.ops().fed_attention_forward
    monkeypatch.setattr(kernels, "ops", lambda: SimpleNamespace(fed_attention_forward=record))

    def record(*args):
        calls.append(len(args))
        return forward(*args)

    states = torch.randn(B, S, 20)
    mask = torch.arange(S)[None] < LENGTHS[:, None]
    memory = Memory(states, decoder.attention.project_keys(states), mask, states[:, 0])
    with torch.no_grad():
        decoder(torch.randint(4, VOCAB, (B, 1)), decoder.initial_state(memory), memory)
    assert calls == []  # decoding: no gradients wanted
    decoder(torch.randint(4, VOCAB, (B, T)), decoder.initial_state(memory), memory)
    assert len(calls) == 1
