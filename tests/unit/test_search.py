"""Search: exact beams and scores on a decoder with fixed probabilities; invariants on real small models."""

from __future__ import annotations

import math

import pytest
import torch

from s2s.data.batching import collate
from s2s.modules.decoders import Memory
from s2s.search import beam_search, draw_from, greedy_search, length_penalty, max_lengths
from s2s.tokenizer import BOS, EOS
from tests.helpers import small_model

A, B = 4, 5
VOCAB = 6


class FixedProbabilityModel:
    """Next-token probabilities depend only on the last two tokens (fairseq's fake-decoder idea).

    from BOS:          a .62   b .38
    BOS a →           EOS .6   a .4
    BOS b →            b .9  EOS .1
    anything longer → EOS 1
    """

    def initial_state(self, memory):
        return torch.full((memory.states.size(0),), BOS)  # the token before the previous one

    def step(self, prev, state, memory):
        probs = torch.zeros(prev.size(0), VOCAB)
        for row, (token, before) in enumerate(zip(prev.tolist(), state.tolist(), strict=True)):
            if token == BOS:
                probs[row, A], probs[row, B] = 0.62, 0.38
            elif before == BOS and token == A:
                probs[row, EOS], probs[row, A] = 0.6, 0.4
            elif before == BOS and token == B:
                probs[row, B], probs[row, EOS] = 0.9, 0.1
            else:
                probs[row, EOS] = 1.0
        return probs.log(), prev.clone(), None

    def reorder_state(self, state, order):
        return state.index_select(0, order)


ONE_INPUT = Memory(torch.zeros(1, 1, 1), None, torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1))


def run_fake(beam_size, alpha, nbest):
    return beam_search(FixedProbabilityModel(), ONE_INPUT, torch.tensor([10]), beam_size, alpha, nbest)[0]


def test_beam_search_finds_the_hand_computed_beams_and_scores():
    best, second = run_fake(beam_size=2, alpha=0.0, nbest=2)
    assert (best.tokens, second.tokens) == ([A], [B, B])
    assert best.score == pytest.approx(math.log(0.62 * 0.6))
    assert second.score == pytest.approx(math.log(0.38 * 0.9))
    assert best.normalized == pytest.approx(best.score)


def test_a_length_penalty_lets_the_longer_hypothesis_win():
    best, second = run_fake(beam_size=2, alpha=1.0, nbest=2)
    assert (best.tokens, second.tokens) == ([B, B], [A])
    assert best.normalized == pytest.approx(math.log(0.38 * 0.9) / (8 / 6))
    assert second.normalized == pytest.approx(math.log(0.62 * 0.6) / (7 / 6))


def test_greedy_takes_the_locally_best_token():
    (hyp,) = greedy_search(FixedProbabilityModel(), ONE_INPUT, torch.tensor([10]))
    assert hyp.tokens == [A]
    assert hyp.score == pytest.approx(math.log(0.62 * 0.6))


def test_the_length_limit_forces_eos():
    (hyp,) = greedy_search(FixedProbabilityModel(), ONE_INPUT, torch.tensor([1]))
    assert hyp.tokens == []
    [beam_hyp] = beam_search(FixedProbabilityModel(), ONE_INPUT, torch.tensor([2]), 2)[0]
    assert len(beam_hyp.tokens) <= 1


def test_length_penalty_is_gnmt():
    assert length_penalty(1, 0.0) == 1.0
    assert length_penalty(7, 1.0) == pytest.approx(2.0)


SOURCES = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16], [7, 7, 7, 9, 20, 21, 22]]


def decode(model, sentences, beam_size=None, **options):
    batch = collate(sentences, None, list(range(len(sentences))))
    limit = max_lengths(batch.src_lengths, 1.5)
    if beam_size is None:
        return greedy_search(model, model.encode(batch.src, batch.src_lengths), limit, **options)
    memory = model.encode(batch.src, batch.src_lengths)
    return [h[0] for h in beam_search(model, memory, limit, beam_size, **options)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_size_one_equals_greedy(seed, cell):
    model = small_model(cell=cell, seed=seed)
    greedy, beam = decode(model, SOURCES), decode(model, SOURCES, beam_size=1)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam]
    assert [h.score for h in greedy] == pytest.approx([h.score for h in beam], abs=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_never_scores_below_greedy(seed):
    model = small_model(seed=seed, attention="luong_general")
    greedy, beam = decode(model, SOURCES), decode(model, SOURCES, beam_size=4)
    for g, b in zip(greedy, beam, strict=True):
        assert b.score >= g.score - 1e-4


@pytest.mark.parametrize("beam_size", [None, 3])
def test_a_sentence_decodes_the_same_alone_as_inside_a_batch(beam_size):
    model = small_model(seed=1)
    together = decode(model, SOURCES, beam_size)
    for sentence, hyp in zip(SOURCES, together, strict=True):
        (alone,) = decode(model, [sentence], beam_size)
        assert alone.tokens == hyp.tokens
        assert alone.score == pytest.approx(hyp.score, abs=1e-4)


@pytest.mark.parametrize("beam_size", [None, 3])
def test_attention_of_each_output_step_is_returned_in_source_order(beam_size):
    model = small_model(seed=2, reverse=True)
    for sentence, hyp in zip(SOURCES, decode(model, SOURCES, beam_size, attention=True), strict=True):
        assert hyp.attention.shape == (len(hyp.tokens) + 1, max(len(s) for s in SOURCES))
        torch.testing.assert_close(hyp.attention.sum(-1), torch.ones(len(hyp.tokens) + 1))
        assert torch.all(hyp.attention[:, len(sentence) :] == 0)


def test_nbest_is_sorted_best_first():
    model = small_model(seed=3)
    batch = collate(SOURCES, None, [0, 1, 2, 3])
    memory = model.encode(batch.src, batch.src_lengths)
    results = beam_search(model, memory, max_lengths(batch.src_lengths, 1.5), 4, nbest=4)
    for options in results:
        scores = [h.normalized for h in options]
        assert scores == sorted(scores, reverse=True)


def test_draws_follow_the_probabilities_and_never_take_a_token_of_probability_zero():
    probabilities = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3]]).repeat(20000, 1)
    drawn = draw_from(probabilities, torch.Generator().manual_seed(0))
    shares = torch.bincount(drawn, minlength=5) / len(drawn)
    assert shares[[0, 2]].tolist() == [0.0, 0.0]
    assert shares[[1, 3, 4]].tolist() == pytest.approx([0.2, 0.5, 0.3], abs=0.01)
    edges = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])  # all the mass at either end, rows not normalised
    assert draw_from(edges.repeat(500, 1)).view(500, 2).tolist() == [[0, 2]] * 500
