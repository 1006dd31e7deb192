"""Self-critical training: CIDEr-D rewards what is particular to a picture's references, sentence BLEU-4 what corpus
BLEU scores, the objective makes the better-rewarded samples more likely, and a captioning run switches to it on
schedule and resumes inside it."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace
from typing import get_args

import pytest
import torch
from torch import nn

from s2s.config import SelfCriticalConfig, load_recipe
from s2s.data.batching import PictureBatch
from s2s.errors import RunError
from s2s.metrics import CiderD, SentenceBleu, caption_words
from s2s.self_critical import REWARDS, SelfCritical
from s2s.tokenizer import EOS
from s2s.train import Trainer
from tests.helpers import SHAPES_RUN, write_recipe

REFERENCES = [["A dog runs on the grass .", "a dog runs"], ["A cat sleeps on the sofa .", "a cat sleeps"]]


def test_a_caption_equal_to_every_reference_scores_ten_and_one_sharing_nothing_scores_zero():
    cider = CiderD([["a dog runs outside"], ["a cat sleeps inside"]])
    assert cider.score("A dog runs outside .", 0) == pytest.approx(10.0)
    assert cider.score("a cat sleeps inside", 0) == 0.0  # "a" is in every picture's references: it weighs nothing
    assert cider.score("", 1) == 0.0


def test_words_particular_to_the_picture_earn_more_than_words_every_picture_shares():
    cider = CiderD(REFERENCES)
    assert cider.score("a dog on the grass", 0) > cider.score("a cat on the grass", 0) > 0
    assert cider.score("a dog", 0) > cider.score("on the", 0)


def test_repeating_a_rewarded_word_does_not_raise_the_reward():
    cider = CiderD(REFERENCES)
    assert cider.score("dog dog dog dog dog", 0) < cider.score("a dog runs", 0)
    assert cider.score("a dog runs on the grass and runs and runs on and on", 0) < cider.score("a dog runs", 0)


def test_sentence_bleu_is_one_for_a_reference_and_zero_without_a_common_word():
    bleu = SentenceBleu(REFERENCES)
    assert bleu.score("A dog runs on the grass .", 0) == pytest.approx(1.0)
    assert bleu.score("two cats", 0) == 0.0
    assert bleu.score("", 0) == 0.0


@pytest.mark.parametrize(
    "caption", ["a dog runs", "dog", "the dog runs on grass", "A cat runs on the grass .", "dog dog dog dog dog dog"]
)
def test_sentence_bleu_is_sacrebleus_smoothed_sentence_bleu_on_the_caption_words(caption):
    import sacrebleu

    words = " ".join(caption_words(caption))
    references = [" ".join(caption_words(text)) for text in REFERENCES[0]]
    expected = sacrebleu.sentence_bleu(words, references, tokenize="none").score / 100
    assert SentenceBleu(REFERENCES).score(caption, 0) == pytest.approx(expected)


def test_a_caption_shorter_than_the_closest_reference_pays_the_brevity_penalty_and_a_longer_one_does_not():
    bleu = SentenceBleu([["a dog runs on the grass"]])
    assert bleu.score("a dog runs", 0) == pytest.approx(math.exp(1 - 6 / 3))  # 1-, 2- and 3-grams all match
    assert bleu.score("a dog runs on the grass today", 0) == pytest.approx((6 / 7 * 5 / 6 * 4 / 5 * 3 / 4) ** 0.25)


def test_every_reward_a_recipe_may_name_has_a_scorer():
    assert set(get_args(SelfCriticalConfig.model_fields["reward"].annotation)) == set(REWARDS)


class Memory(SimpleNamespace):
    def select(self, rows):
        return Memory(mask=self.mask[rows])


class Unigram(nn.Module):
    """A decoder whose next token ignores everything: one learnt distribution over ids 0…5 (4: 'dog', 5: 'cat')."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([-9.0, -9.0, -9.0, 0.0, 1.0, 1.0]))

    def encode(self, pictures):
        return Memory(mask=torch.ones(len(pictures), 1, dtype=torch.bool))

    def initial_state(self, memory):
        return None

    def step(self, prev, state, memory):
        assert len(prev) == len(memory.mask)  # an ended caption leaves both
        return self.logits.expand(len(prev), -1), state, None

    def reorder_state(self, state, order):
        return state


class Words:
    def decode(self, rows):
        return [" ".join({4: "dog", 5: "cat"}.get(t, "?") for t in row) for row in rows]


@pytest.mark.parametrize("reward", sorted(REWARDS))
def test_a_step_makes_the_better_rewarded_words_more_likely_and_reports_minus_the_mean_reward(reward):
    torch.manual_seed(0)
    model = Unigram()
    objective = SelfCritical(model, REWARDS[reward](REFERENCES), Words(), samples=4, max_length=4)
    batch = PictureBatch(torch.zeros(8, 1), [0] * 8)  # eight pictures of a dog
    before = torch.softmax(model.logits.detach(), 0)
    loss = objective(batch)
    assert -5.0 < float(loss.detach()) < 0.0  # minus the samples' mean CIDEr-D
    assert batch.n_tokens > 0
    loss.backward()
    with torch.no_grad():
        model.logits -= 1.0 * model.logits.grad
    after = torch.softmax(model.logits.detach(), 0)
    assert after[4] > before[4] and after[5] < before[5]


def test_each_sample_ends_with_eos_or_at_the_length_limit_and_pads_after():
    torch.manual_seed(0)
    objective = SelfCritical(Unigram(), CiderD(REFERENCES), Words(), samples=2, max_length=3)
    tokens, log_probs = objective.sample(Memory(mask=torch.ones(50, 1, dtype=torch.bool)))
    assert tokens.size(1) <= 3 and log_probs.shape == (50,)
    for row in tokens.tolist():
        ending = row.index(EOS) if EOS in row else None
        assert ending is not None  # the last position forces EOS
        assert all(t == 0 for t in row[ending + 1 :])


def test_a_low_temperature_draws_only_the_most_likely_words_and_a_high_one_draws_every_word():
    first_words = {}
    for temperature in (0.05, 1.0, 5.0):
        torch.manual_seed(0)
        objective = SelfCritical(
            Unigram(), CiderD(REFERENCES), Words(), samples=2, max_length=2, temperature=temperature
        )
        tokens, _ = objective.sample(Memory(mask=torch.ones(400, 1, dtype=torch.bool)))
        first_words[temperature] = set(tokens[:, 0].tolist())
    assert first_words[0.05] == {4, 5}  # 'dog' and 'cat' tie at the top
    assert first_words[1.0] >= {3, 4, 5}
    assert first_words[5.0] == set(range(6))


def shapes_recipe(tmp_path, **train):
    tree = copy.deepcopy(SHAPES_RUN)
    tree["train"].update(validate_every=2, log_every=1, **train)
    tree["self_critical"] = {"after_steps": 6, "samples": 3, "batch_size": 8, "lr": 2e-4, "validate_every": 1}
    return write_recipe(tmp_path / "recipe.yaml", tree)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_a_captioning_run_switches_to_the_self_critical_stage_after_its_steps(tmp_path):
    Trainer(load_recipe(shapes_recipe(tmp_path, max_steps=10)), tmp_path / "run").run()
    log = records(tmp_path / "run")
    (stage,) = [r for r in log if r["event"] == "stage"]
    assert (stage["step"], stage["name"]) == (6, "self-critical")
    steps = [r for r in log if r["event"] == "train"]
    assert all(r["loss"] > 0 for r in steps if r["step"] <= 6)  # cross-entropy
    assert all(r["loss"] <= 0 and "ppl" not in r for r in steps if r["step"] > 6)  # minus the mean reward
    valid = {r["step"]: r for r in log if r["event"] == "valid"}
    assert sorted(valid) == [2, 4, 6, 7, 8, 9, 10]  # every step in the stage, as it asks
    assert valid[8]["lr"] == pytest.approx(2e-4)


def test_a_run_resumed_inside_the_stage_validates_as_one_that_never_stopped(tmp_path):
    Trainer(load_recipe(shapes_recipe(tmp_path, max_steps=10)), tmp_path / "whole").run()
    Trainer(load_recipe(shapes_recipe(tmp_path, max_steps=8)), tmp_path / "part").run()
    Trainer(load_recipe(shapes_recipe(tmp_path, max_steps=10)), tmp_path / "part", resume=True).run()
    whole, part = records(tmp_path / "whole"), records(tmp_path / "part")
    assert [r["event"] for r in part].count("stage") == 1
    losses = [[(r["step"], r["loss"]) for r in log if r["event"] == "valid"] for log in (whole, part)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)


def test_a_run_saved_in_the_stage_cannot_resume_under_a_recipe_without_it(tmp_path):
    Trainer(load_recipe(shapes_recipe(tmp_path, max_steps=8)), tmp_path / "run").run()
    tree = copy.deepcopy(SHAPES_RUN)
    tree["train"]["max_steps"] = 10
    with pytest.raises(RunError, match="final training stage that the recipe no longer has"):
        Trainer(load_recipe(write_recipe(tmp_path / "plain.yaml", tree)), tmp_path / "run", resume=True).run()


def test_in_the_stage_the_lr_plateaus_count_against_the_stages_own_best_and_the_kept_weights_against_the_runs(
    tmp_path, monkeypatch
):
    scripted = iter([10.0, 20.0, 15.0, 5.0, 6.0, 7.0, 4.0])  # steps 2, 4, 6, then each stage step 7…10
    monkeypatch.setattr(Trainer, "score_valid", lambda self, session: (1.0, {"bleu4": (v := next(scripted))}, v))
    recipe = load_recipe(shapes_recipe(tmp_path, max_steps=10, lr_patience=1))
    Trainer(recipe, tmp_path / "run").run()
    log = records(tmp_path / "run")
    valid = {r["step"]: r for r in log if r["event"] == "valid"}
    assert [valid[s]["improved"] for s in (2, 4, 6, 7, 8, 9, 10)] == [True, True, False, False, False, False, False]
    # 7, 8 and 9 each beat the stage's previous validation, and 10 is one plateau: the stage's lr is never halved
    stage_lrs = [r["lr"] for r in log if r["event"] == "train" and r["step"] > 6]
    assert len(stage_lrs) == 4 and stage_lrs == pytest.approx([2e-4] * 4)
    assert valid[10]["best"] == 20.0
