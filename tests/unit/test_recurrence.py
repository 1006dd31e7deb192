"""The hand-written recurrences compute what PyTorch's modules and autograd compute: the encoder's GRU layers give
``nn.GRU``'s states, and the decoder's input-fed loop the general decoder's outputs, attention and final state, with
the same gradients (of every parameter and of the inputs), on padded batches."""

from __future__ import annotations

import pytest
import torch

from s2s.modules.decoders import RNNDecoder
from s2s.modules.encoders import RNNEncoder
from tests.helpers import decoder_and_inputs, run

HIDDEN, VOCAB = 16, 30


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_dot", "bahdanau+gate", "luong_general+gate"])
def test_the_fast_loop_computes_what_autograd_computes_gradients_included(attention):
    decoder, states, prev = decoder_and_inputs(attention)
    assert decoder.fast_loop
    fast, general = run(decoder, True, states, prev), run(decoder, False, states, prev)
    # the general path takes its softmax in fp32: agreement to fp32 precision, not fp64
    close = dict(atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fast[0], general[0], **close)  # logits
    torch.testing.assert_close(fast[1], general[1], **close)  # attention weights
    torch.testing.assert_close(fast[2].hidden, general[2].hidden, **close)
    torch.testing.assert_close(fast[2].feed, general[2].feed, **close)
    torch.testing.assert_close(fast[3], general[3], **close)  # gradient of the encoder states
    assert fast[4].keys() == general[4].keys()
    for name in general[4]:
        torch.testing.assert_close(fast[4][name], general[4][name], **close, msg=name)


def test_under_bf16_autocast_the_fast_loop_stays_close_to_fp32():
    decoder, states, prev = decoder_and_inputs("bahdanau", torch.float32)
    exact, bf16 = run(decoder, True, states, prev), run(decoder, True, states, prev, torch.bfloat16)
    torch.testing.assert_close(bf16[0], exact[0], atol=0.05, rtol=0.05)
    torch.testing.assert_close(bf16[1], exact[1], atol=0.02, rtol=0.05)
    relative = (bf16[4]["rnn.weight_hh_l0"] - exact[4]["rnn.weight_hh_l0"]).norm() / exact[4]["rnn.weight_hh_l0"].norm()
    assert relative < 0.05


@pytest.mark.parametrize("shape", [dict(cell="lstm"), dict(layers=2), dict(every_step=True)])
def test_shapes_the_fast_loop_does_not_cover_take_the_general_path(shape):
    settings = dict(cell="gru", layers=1, every_step=False) | shape
    decoder = RNNDecoder(
        vocab_size=VOCAB,
        embedding_size=12,
        hidden_size=HIDDEN,
        layers=settings["layers"],
        cell=settings["cell"],
        dropout=0.0,
        summary_size=24,
        attention="bahdanau",
        input_feeding=True,
        every_step=settings["every_step"],
        tie_embeddings=False,
    )
    assert not decoder.fast_loop


@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_encoders_gru_layers_compute_what_nn_gru_computes_gradients_included(bidirectional):
    torch.manual_seed(0)
    encoder = RNNEncoder(VOCAB, 8, 6, 2, "gru", bidirectional, 0.0, False).double()
    src, lengths = torch.randint(4, VOCAB, (4, 7)), torch.tensor([7, 3, 5, 1])
    results = []
    for fast in (True, False):
        encoder.fast_gru = fast
        encoder.zero_grad()
        out = encoder(src, lengths)
        (out.states.sin().sum() + out.summary.cos().sum()).backward()
        grads = {name: p.grad.clone() for name, p in encoder.named_parameters()}
        results.append((out.states.detach(), out.summary.detach(), grads))
    (states, summary, grads), (nn_states, nn_summary, nn_grads) = results
    torch.testing.assert_close(states, nn_states)
    torch.testing.assert_close(summary, nn_summary)
    for name in nn_grads:
        torch.testing.assert_close(grads[name], nn_grads[name], msg=name)


def test_weight_casts_are_reused_only_within_a_search():
    from s2s.modules.recurrence import cast_weight, reuse_weight_casts

    weight = torch.nn.Parameter(torch.randn(6, 4))
    optimizer = torch.optim.Adam([weight], lr=0.1, fused=True)  # updates in place without a version bump
    with reuse_weight_casts():
        first = cast_weight(weight[:, 1:], torch.bfloat16)
        assert cast_weight(weight[:, 1:], torch.bfloat16) is first  # the same slice: no new cast
        assert cast_weight(weight[:, :1], torch.bfloat16) is not first  # another slice is another cast
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    with reuse_weight_casts():
        again = cast_weight(weight[:, 1:], torch.bfloat16)
    torch.testing.assert_close(again, weight[:, 1:].detach().bfloat16())  # never the stale cast
    assert cast_weight(weight, torch.float32) is weight
