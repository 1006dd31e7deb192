"""The compiled CPU kernels compute what the Python loops compute: the encoder's GRU layers and the decoder's
input-fed attention loop, forward and backward, in fp32 and under bf16 autocast, on padded batches, however the
batch is split between threads; and greedy and beam search of that decoder find the hypotheses that the Python
search finds. Where the kernels cannot be built these tests skip, saying why, unless
S2S_KERNELS=require, under which they fail (what s2s.kernels decides, and when, is tests/test_backend.py's)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from s2s import kernels
from s2s.models import Seq2Seq
from s2s.modules.decoders import Memory
from s2s.modules.encoders import RNNEncoder
from s2s.search import search
from s2s.tokenizer import EOS
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


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_dot", "luong_general+gate"])
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


def test_a_decoding_step_runs_the_python_loop_and_training_the_kernels(monkeypatch):
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


def translation_model(attention: str) -> Seq2Seq:
    """A small untrained encoder-decoder whose outputs often end early (EOS made likely) and often tie in bf16;
    ``attention`` may end in ``+gate``: with a context gate."""
    torch.manual_seed(0)
    attention, _, gate = attention.partition("+")
    bidirectional = attention != "luong_dot"  # dot scores need keys the decoder's size
    encoder = RNNEncoder(VOCAB, 8, HIDDEN // (1 + bidirectional), 1, "gru", bidirectional, 0.0, False)
    decoder = input_fed_decoder(HIDDEN, attention, VOCAB, HIDDEN, context_gate=gate == "gate")
    with torch.no_grad():
        decoder.output.weight.mul_(4.0)  # peaked distributions: beams that differ
        decoder.output.bias[EOS] += 2.0
    return Seq2Seq(encoder, decoder).eval()


def searched(model, beam: int, nbest: int, dtype) -> list[list]:
    """Every hypothesis of a search over a padded batch whose length limits include 1 (EOS at once)."""
    src, lengths = torch.randint(4, VOCAB, (B, 7)), torch.tensor([7, 3, 5, 1, 6, 7, 2])
    limit = torch.tensor([9, 4, 1, 6, 12, 2, 8])
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        memory = model.encode(src, lengths)
        with kernels.disabled():  # one encoding for both searches: only the search differs
            return search(model, memory, limit, beam, 0.6, nbest, attention=True), memory, limit


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_dot", "luong_general+gate"])
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("beam, nbest", [(1, 1), (4, 3)], ids=["greedy", "beam"])
def test_search_in_the_kernels_finds_the_hypotheses_the_python_search_finds(loops, attention, dtype, beam, nbest):
    needs_kernels()
    model = translation_model(attention)
    expected, memory, limit = searched(model, beam, nbest, dtype)
    for parts in (1, 3):  # 3 parts of 7 sentences: 3, 3 and 1
        loops(compiled=True, parts=parts)
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            assert model.search_in_kernels(memory, limit, beam, 0.6, nbest, True) is not None
            got = search(model, memory, limit, beam, 0.6, nbest, attention=True)
        for mine, theirs in zip(got, expected, strict=True):
            assert [h.tokens for h in mine] == [h.tokens for h in theirs]  # the same choices, ties included
            for a, b in zip(mine, theirs, strict=True):
                assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-5)
                assert a.normalized == pytest.approx(b.normalized, rel=1e-5, abs=1e-5)
                torch.testing.assert_close(a.attention, b.attention, rtol=0, atol=1e-5)
    assert any(len(h.tokens) + 1 < limit[b] for b, options in enumerate(expected) for h in options)  # some ended


def test_search_leaves_to_python_what_the_kernels_do_not_cover(loops):
    needs_kernels()
    model = translation_model("bahdanau")
    loops(compiled=True)
    src, lengths, limit = torch.randint(4, VOCAB, (2, 5)), torch.tensor([5, 3]), torch.tensor([6, 6])
    with torch.no_grad():
        memory = model.encode(src, lengths)
        assert model.search_in_kernels(memory, limit, 2, 0.0, 1, False) is not None
        model.train()  # dropout: the Python step draws it
        assert model.search_in_kernels(memory, limit, 2, 0.0, 1, False) is None
        model.eval()
        assert model.search_in_kernels(memory, limit, VOCAB, 0.0, 1, False) is None  # too few words for the beam
        model.decoder.fast_loop = False  # another decoder shape (LSTM, layers, every-step conditioning)
        assert model.search_in_kernels(memory, limit, 2, 0.0, 1, False) is None
    model.decoder.fast_loop = True
    assert model.search_in_kernels(memory, limit, 2, 0.0, 1, False) is None  # gradients wanted
