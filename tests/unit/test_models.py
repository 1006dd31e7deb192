"""The encoder–decoder: padding never changes a sentence's result; reversal really reverses; attention is a
distribution over real source tokens."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from s2s.config import DecoderConfig, EncoderConfig, ModelConfig
from s2s.data.batching import collate
from s2s.models import attention_shortfall, build_seq2seq
from s2s.modules.encoders import RNNEncoder, reverse_padded
from tests.helpers import SENTENCES, TARGETS, VOCAB, small_model


def teacher_forced(model, batch) -> torch.Tensor:
    """Logits [B, T, V] at every target position, padding included."""
    memory = model.encode(batch.src, batch.src_lengths)
    logits, _, _ = model.decoder(batch.tgt_in, model.initial_state(memory), memory)
    return logits


VARIANTS = [
    dict(cell=c, bidirectional=b, attention=a, reverse=r)
    for c, b, a, r in itertools.product(
        ["gru", "lstm", "rnn"], [True, False], ["bahdanau", "luong_general", "none"], [False, True]
    )
] + [
    dict(attention="luong_dot"),
    dict(layers=2, dec_layers=3),
    dict(conditioning="every_step", attention="none"),
    dict(input_feeding=False),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_a_sentence_gets_the_same_result_alone_as_inside_a_padded_batch(variant):
    model = small_model(**variant)
    batch = collate(SENTENCES, TARGETS, [0, 1, 2])
    with torch.no_grad():
        memory = model.encode(batch.src, batch.src_lengths)
        logits = teacher_forced(model, batch)
        for i, (source, target) in enumerate(zip(SENTENCES, TARGETS, strict=True)):
            alone = collate([source], [target], [i])
            alone_memory = model.encode(alone.src, alone.src_lengths)
            alone_logits = teacher_forced(model, alone)
            n, t = len(source), len(target) + 1
            torch.testing.assert_close(memory.states[i, :n], alone_memory.states[0, :n])
            torch.testing.assert_close(memory.summary[i], alone_memory.summary[0])
            torch.testing.assert_close(logits[i, :t], alone_logits[0, :t], atol=1e-5, rtol=1e-4)


def test_reverse_source_reads_the_source_backwards_and_reports_states_in_source_order():
    plain, reversed_ = small_model(reverse=False), small_model(reverse=True)
    reversed_.load_state_dict(plain.state_dict())
    batch = collate(SENTENCES, None, [0, 1, 2])
    flipped = collate([s[::-1] for s in SENTENCES], None, [0, 1, 2])
    with torch.no_grad():
        by_flag = reversed_.encoder(batch.src, batch.src_lengths)
        by_hand = plain.encoder(flipped.src, flipped.src_lengths)
    torch.testing.assert_close(by_flag.states, reverse_padded(by_hand.states, batch.src_lengths))
    torch.testing.assert_close(by_flag.summary, by_hand.summary)


def test_reverse_padded_keeps_padding_in_place_and_round_trips():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    lengths = torch.tensor([3, 2])
    assert reverse_padded(x, lengths).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]
    assert torch.equal(reverse_padded(reverse_padded(x, lengths), lengths), x)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_general", "luong_dot"])
def test_attention_weights_sum_to_one_over_real_tokens_and_are_zero_on_padding(attention):
    model = small_model(attention=attention)
    batch = collate(SENTENCES, None, [0, 1, 2])
    with torch.no_grad():
        memory = model.encode(batch.src, batch.src_lengths)
        _, _, weights = model.step(torch.tensor([2, 2, 2]), model.initial_state(memory), memory)
    for i, sentence in enumerate(SENTENCES):
        assert weights[i, : len(sentence)].sum().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.all(weights[i, len(sentence) :] == 0)


def test_one_step_at_a_time_equals_teacher_forcing_over_the_whole_target():
    model = small_model()
    batch = collate(SENTENCES, TARGETS, [0, 1, 2])
    with torch.no_grad():
        logits = teacher_forced(model, batch)
        memory = model.encode(batch.src, batch.src_lengths)
        state = model.initial_state(memory)
        for t in range(batch.tgt_in.size(1)):
            step_logits, state, _ = model.step(batch.tgt_in[:, t], state, memory)
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=1e-4)


def test_tied_embeddings_share_one_matrix():
    config = ModelConfig(
        decoder=DecoderConfig(embedding_size=16, hidden_size=16, tie_embeddings=True),
        encoder=EncoderConfig(embedding_size=16, hidden_size=8),
    )
    model = build_seq2seq(config, VOCAB, VOCAB)
    assert model.decoder.output.weight is model.decoder.embed.weight


@pytest.mark.parametrize("tied", [False, True])
def test_an_untrained_decoder_predicts_nearly_uniformly_whether_or_not_its_embeddings_are_tied(tied):
    """The shared matrix starts at the output layer's scale, not the embedding's N(0, 1): logits of std ~√H at the
    first step would cost the first thousands of updates."""
    torch.manual_seed(0)
    vocab = 500
    config = ModelConfig(
        decoder=DecoderConfig(embedding_size=128, hidden_size=128, tie_embeddings=tied),
        encoder=EncoderConfig(embedding_size=32, hidden_size=32),
    )
    model = build_seq2seq(config, vocab, vocab).eval()
    batch = collate([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14, 15, 16, 17, 18]], [0, 1])
    logits = teacher_forced(model, batch)
    mask = batch.tgt_out != 0
    loss = torch.nn.functional.cross_entropy(logits[mask], batch.tgt_out[mask])
    assert abs(loss.item() - math.log(vocab)) < 0.3


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_training_loss_is_label_smoothed_cross_entropy_per_real_target_token_gradients_included(smoothing):
    model = small_model()
    batch = collate(SENTENCES, TARGETS, [0, 1, 2])
    loss = model(batch, label_smoothing=smoothing)
    full = teacher_forced(model, batch)
    mask = batch.tgt_out.ne(0)
    expected = torch.nn.functional.cross_entropy(full[mask], batch.tgt_out[mask], label_smoothing=smoothing)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, model.decoder.output.weight)
    (expected_grad,) = torch.autograd.grad(expected, model.decoder.output.weight)
    torch.testing.assert_close(grad, expected_grad)


def test_the_attention_shortfall_counts_what_each_real_source_position_missed_over_the_real_steps():
    weights = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # [B=1, T=3, S=3]
    real = torch.tensor([[True, True, False]])  # the third step is padding: its weights do not count
    source = torch.tensor([[True, True, False]])  # the third position is padding: it is owed nothing
    assert attention_shortfall(weights, real, source).item() == (1 - 1.5) ** 2 + (1 - 0.5) ** 2


@pytest.mark.parametrize("input_feeding", [True, False])
def test_the_attention_penalty_joins_the_training_loss_per_target_token_and_never_the_validation_loss(input_feeding):
    model = small_model(input_feeding=input_feeding).train()  # no dropout: training and validation read alike
    batch = collate(SENTENCES, TARGETS, [0, 1, 2])
    plain = model(batch)
    model.decoder.attention_penalty = 0.7
    memory = model.encode(batch.src, batch.src_lengths)
    _, _, weights = model.decoder.attentional(batch.tgt_in, model.initial_state(memory), memory)
    real = batch.tgt_out.ne(0)
    shortfall = attention_shortfall(weights, real, memory.mask)
    torch.testing.assert_close(model(batch), plain + 0.7 * shortfall / real.sum())
    (grad,) = torch.autograd.grad(model(batch) - plain, model.decoder.attention.energy.weight)
    assert grad.abs().sum() > 0  # the term reaches the attention's own weights
    model.eval()
    torch.testing.assert_close(model(batch), plain)


def test_word_dropout_hides_words_only_in_training_and_never_touches_padding():
    from s2s.models import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(embedding_size=4, hidden_size=4, dropout=0.0, word_dropout=0.5), 20)
    seen = []
    encoder.embed.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    batch = collate([[5, 6, 7, 8, 9, 10], [11, 12]], None, [0, 1])
    encoder.train()(batch.src, batch.src_lengths)
    hidden = seen[-1]
    assert hidden[batch.src.eq(0)].eq(0).all()  # padding stays padding
    assert 0 < int(hidden.eq(1).sum()) < 8  # some of the 8 words became unk, not all
    encoder.eval()(batch.src, batch.src_lengths)
    assert torch.equal(seen[-1], batch.src)


@pytest.mark.parametrize(
    "variant",
    [dict(), dict(attention="luong_general"), dict(attention="luong_dot"), dict(cell="lstm"), dict(input_feeding=False)]
    + [dict(conditioning="every_step", attention="none"), dict(conditioning="every_step", input_feeding=False)],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) or "default",
)
def test_several_decoder_rows_per_source_read_the_memory_as_if_it_were_copied_for_each(variant):
    """Beam search runs K hypotheses per sentence on one copy of the sentence's encoding."""
    model, k = small_model(**variant), 3
    batch = collate(SENTENCES, None, [0, 1, 2])
    rows = torch.arange(len(SENTENCES)).repeat_interleave(k)
    with torch.no_grad():
        memory = model.encode(batch.src, batch.src_lengths)
        state = model.reorder_state(model.initial_state(memory), rows)
        prev = torch.randint(4, VOCAB, (len(rows),))
        shared, shared_state, shared_weights = model.step(prev, state, memory)
        copied, copied_state, copied_weights = model.step(prev, state, memory.select(rows))
    torch.testing.assert_close(shared, copied)
    if copied_weights is not None:
        torch.testing.assert_close(shared_weights, copied_weights)
    torch.testing.assert_close(shared_state, copied_state)


def test_a_plain_rnn_layer_is_torch_nn_rnn_with_tanh_both_ways():
    torch.manual_seed(0)
    encoder = RNNEncoder(VOCAB, 8, 6, 1, "rnn", True, 0.0, False).eval()
    forward, backward = encoder.layers[0]
    assert isinstance(forward, torch.nn.RNN) and forward.nonlinearity == "tanh"
    src = torch.tensor([[5, 9, 4, 7, 6]])
    with torch.no_grad():
        states = encoder(src, torch.tensor([5])).states[0]  # [S, 2 × 6]
        embedded = encoder.embed(src)
        reference = torch.nn.RNN(8, 6, batch_first=True)  # the same weights in a module of its own
        reference.load_state_dict(forward.state_dict())
        torch.testing.assert_close(states[:, :6], reference(embedded)[0][0])
        reference.load_state_dict(backward.state_dict())
        torch.testing.assert_close(states[:, 6:], reference(embedded.flip(1))[0][0].flip(0))


def test_forget_bias_sets_exactly_the_forget_gates_slice_of_every_lstm_bias():
    def lstm_biases(model) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in model.named_parameters() if ".bias_" in name}

    def built(encoder_bias, decoder_bias):
        torch.manual_seed(0)
        config = ModelConfig(
            encoder=EncoderConfig(cell="lstm", hidden_size=6, layers=2, forget_bias=encoder_bias),
            decoder=DecoderConfig(cell="lstm", hidden_size=12, forget_bias=decoder_bias),
        )
        return lstm_biases(build_seq2seq(config, VOCAB, VOCAB))

    plain, set_ = built(None, None), built(1.0, 2.5)
    checked = 0
    for name, bias in plain.items():
        if "rnn" not in name and "layers" not in name:
            torch.testing.assert_close(set_[name], bias)  # not an LSTM's (attention, output, bridge)
            continue
        hidden = bias.numel() // 4
        forget = slice(hidden, 2 * hidden)
        value = 1.0 if name.startswith("encoder") else 2.5
        expected = bias.clone()
        expected[forget] = value if "bias_ih" in name else 0.0
        torch.testing.assert_close(set_[name], expected)
        checked += 1
    assert checked == 2 * 2 * 2 + 2  # encoder: 2 layers × 2 directions × 2 biases; decoder: 2 biases
