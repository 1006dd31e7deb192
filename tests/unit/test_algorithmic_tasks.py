"""The algorithmic tasks s2s generates (copy, reverse, sort, recall, delayed recall): each split is the same for a
seed, the test split's lengths lie outside the training ones, every answer is the task's, and impossible settings
are recipe errors that name their key."""

from __future__ import annotations

import pytest

from s2s.config import load_recipe
from s2s.data.generated import BLANK, QUERY, sequence_corpus
from s2s.errors import RecipeError
from s2s.metrics import token_accuracy
from tests.helpers import TINY, write_recipe

TASKS = ["copy", "reverse", "sort", "recall", "delayed_recall"]
SIZES = {"train": 400, "valid": 50, "test": 100}


def corpus(task: str, seed: int = 3) -> dict[str, list[tuple[str, str]]]:
    lag = 7 if task == "delayed_recall" else None
    return sequence_corpus(task, SIZES, seed, 10, (1, 6), (9, 10), lag)


def length(task: str, source: str) -> int:
    """Letters of an input (recall: its key-value pairs)."""
    if task == "recall":
        return len(source.split(QUERY)[0]) // 2
    return len(source.rstrip(BLANK))


@pytest.mark.parametrize("task", TASKS)
def test_a_seed_makes_the_same_splits_and_another_seed_others(task):
    assert corpus(task) == corpus(task)
    assert corpus(task) != corpus(task, seed=4)
    assert {name: len(pairs) for name, pairs in corpus(task).items()} == SIZES


@pytest.mark.parametrize("task", TASKS)
def test_test_lengths_lie_outside_the_training_ones(task):
    splits = corpus(task)
    for name in ("train", "valid"):
        assert {length(task, source) for source, _ in splits[name]} == set(range(1, 7))  # every length, drawn
    assert {length(task, source) for source, _ in splits["test"]} == {9, 10}


@pytest.mark.parametrize("task", TASKS)
def test_every_answer_is_the_tasks(task):
    for source, answer in corpus(task)["train"] + corpus(task)["test"]:
        if task == "recall":
            pairs, asked = source.split(QUERY)
            values = dict(zip(pairs[::2], pairs[1::2], strict=True))
            assert len(values) == len(pairs) // 2  # distinct keys
            assert answer == values[asked]
            continue
        letters = source.rstrip(BLANK)
        assert set(letters) <= set("abcdefghij")
        expected = {"copy": letters, "reverse": letters[::-1], "sort": "".join(sorted(letters))}.get(task, letters)
        assert answer == expected
        if task == "delayed_recall":
            assert source == letters + BLANK * 7


def recipe_error(tmp_path, generator: dict) -> str:
    tree = {**TINY, "data": {**TINY["data"], "generator": {**TINY["data"]["generator"], **generator}}}
    with pytest.raises(RecipeError) as caught:
        load_recipe(write_recipe(tmp_path / "r.yaml", tree))
    return str(caught.value)


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        ({"task": "delayed_recall"}, "data.generator.lag: delayed_recall needs a lag of at least 1 blank (got None)"),
        ({"task": "delayed_recall", "lag": 0}, "data.generator.lag: delayed_recall needs a lag of at least 1 blank"),
        ({"task": "copy", "lag": 5}, "data.generator.lag: applies to delayed_recall, not to copy"),
        ({"task": "copy", "train_lengths": [0, 5]}, "data.generator.train_lengths: lengths start at 1 (got 0)"),
        ({"task": "sort", "train_lengths": [5, 2]}, "data.generator.train_lengths: [5, 2] holds no length"),
        (
            {"task": "reverse", "train_lengths": [1, 20], "test_lengths": [15, 30]},
            "data.generator.test_lengths: [15, 30] overlaps train_lengths [1, 20]: unseen lengths lie outside them",
        ),
        (
            {"task": "recall", "symbols": 8, "train_lengths": [1, 6], "test_lengths": [7, 9]},
            "data.generator.test_lengths: recall needs a distinct key for each of up to 9 pairs, and symbols gives 8",
        ),
        ({"task": "copy", "symbols": 27}, "data.generator.symbols: input should be less than or equal to 26"),
        ({"lag": 3}, "data.generator.lag: applies to the algorithmic tasks"),
    ],
)
def test_impossible_settings_are_recipe_errors_naming_the_key(tmp_path, generator, message):
    assert message in recipe_error(tmp_path, generator)


def test_token_accuracy_counts_reference_tokens_matched_in_place():
    assert token_accuracy([[1, 2, 3], [4]], [[1, 9, 3], [4, 5]]) == 60.0  # 3 of 5; a missing token is wrong
    assert token_accuracy([[1, 2, 3, 7]], [[1, 2, 3]]) == 100.0  # beyond the reference: not counted here
