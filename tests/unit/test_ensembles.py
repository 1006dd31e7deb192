"""Encoder-decoder ensembles (``model.members``): members start apart, train on the mean of their losses, and
search follows the mean of their next-token probabilities through the same search as one model."""

from __future__ import annotations

import copy

import pytest
import torch

from s2s.config import CaptionModelConfig, DecoderConfig, EncoderConfig, ImageEncoderConfig, ModelConfig
from s2s.data.batching import collate
from s2s.models import Seq2Seq, Seq2SeqEnsemble, build_captioner, build_seq2seq, count_parameters
from s2s.search import beam_search, greedy_search, max_lengths, search
from s2s.tokenizer import BOS
from tests.helpers import SENTENCES, TARGETS, VOCAB, small_model


def ensemble(members: int = 2, seed: int = 0) -> Seq2SeqEnsemble:
    torch.manual_seed(seed)
    config = ModelConfig(
        encoder=EncoderConfig(embedding_size=8, hidden_size=6, dropout=0.0),
        decoder=DecoderConfig(embedding_size=8, hidden_size=12, dropout=0.0, attention="luong_general"),
        members=members,
    )
    return build_seq2seq(config, VOCAB, VOCAB).eval()


def batch_of(sentences, targets=None):
    return collate(sentences, targets, list(range(len(sentences))))


def test_each_member_starts_from_its_own_weights():
    model = ensemble(members=3)
    assert type(model) is Seq2SeqEnsemble and len(model.members) == 3
    first, second = (member.encoder.embed.weight for member in model.members[:2])
    assert not torch.equal(first, second)


def test_a_step_gives_the_log_of_the_members_mean_next_token_probabilities_and_their_mean_attention():
    model = ensemble()
    batch = batch_of(SENTENCES)
    memory = model.encode(batch.src, batch.src_lengths)
    prev = torch.full((len(SENTENCES),), BOS)
    log_mean, _, weights = model.step(prev, model.initial_state(memory), memory)
    alone = [m.step(prev, m.initial_state(part), part) for m, part in zip(model.members, memory.parts, strict=True)]
    torch.testing.assert_close(log_mean.exp(), torch.stack([logits.softmax(-1) for logits, _, _ in alone]).mean(0))
    torch.testing.assert_close(weights, torch.stack([w for _, _, w in alone]).mean(0))


@pytest.mark.parametrize("beam_size", [None, 3])
def test_members_that_agree_search_exactly_as_one_of_them_does(beam_size):
    member = small_model(seed=4, attention="luong_general")
    twins = Seq2SeqEnsemble([member, copy.deepcopy(member)]).eval()
    batch = batch_of(SENTENCES)
    limit = max_lengths(batch.src_lengths, 1.5)
    found = []
    for model in (member, twins):
        memory = model.encode(batch.src, batch.src_lengths)
        if beam_size is None:
            found.append(greedy_search(model, memory, limit, attention=True))
        else:
            found.append([h[0] for h in beam_search(model, memory, limit, beam_size, attention=True)])
    for alone, together in zip(*found, strict=True):
        assert together.tokens == alone.tokens
        assert together.score == pytest.approx(alone.score, abs=1e-4)
        torch.testing.assert_close(together.attention, alone.attention)


def test_a_disagreeing_ensemble_still_decodes_each_sentence_alone_as_in_a_batch():
    model = ensemble(seed=3)
    batch = batch_of(SENTENCES)
    limit = max_lengths(batch.src_lengths, 1.5)
    together = search(model, model.encode(batch.src, batch.src_lengths), limit, 3, 0.0, 1)
    for row, sentence in enumerate(SENTENCES):
        alone_batch = batch_of([sentence])
        memory = model.encode(alone_batch.src, alone_batch.src_lengths)
        (alone,) = search(model, memory, limit[row : row + 1], 3, 0.0, 1)
        assert alone[0].tokens == together[row][0].tokens


def test_the_training_loss_is_the_members_mean_loss():
    model = ensemble()
    batch = batch_of(SENTENCES, TARGETS)
    torch.testing.assert_close(model(batch), torch.stack([m(batch) for m in model.members]).mean())


def test_captioners_share_a_backbone_that_does_not_train_and_own_one_that_does():
    def captioner(freeze: bool) -> Seq2SeqEnsemble:
        config = CaptionModelConfig(
            encoder=ImageEncoderConfig(channels=[8, 16], output_size=16, dropout=0.0, freeze=freeze),
            decoder=DecoderConfig(embedding_size=8, hidden_size=16, dropout=0.0),
            members=2,
        )
        return build_captioner(config, vocab_size=20, image_size=32).eval()

    frozen, trained = captioner(freeze=True), captioner(freeze=False)
    assert frozen.members[0].encoder.backbone is frozen.members[1].encoder.backbone
    assert trained.members[0].encoder.backbone is not trained.members[1].encoder.backbone
    assert all(type(member) is Seq2Seq for member in frozen.members)
    backbone = count_parameters(frozen.members[0].encoder.backbone)
    assert count_parameters(trained) - count_parameters(frozen) == backbone  # the shared one counts once


def test_a_shared_backbone_runs_once_for_a_picture_and_each_member_encodes_its_grid(monkeypatch):
    config = CaptionModelConfig(
        encoder=ImageEncoderConfig(channels=[8, 16], output_size=16, dropout=0.0, freeze=True),
        decoder=DecoderConfig(embedding_size=8, hidden_size=16, dropout=0.0),
        members=3,
    )
    model = build_captioner(config, vocab_size=20, image_size=32).eval()
    pictures = torch.randn(2, 3, 32, 32)
    alone = [member.encode(pictures).states for member in model.members]
    backbone = model.members[0].encoder.backbone
    calls = []
    backbone.register_forward_hook(lambda *_: calls.append(1))
    together = model.encode(pictures)
    assert len(calls) == 1
    for part, states in zip(together.parts, alone, strict=True):
        torch.testing.assert_close(part.states, states)
