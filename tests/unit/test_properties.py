"""Properties that hold for any input: hypothesis draws the inputs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s.config import TokenizerConfig
from s2s.data.batching import batch_indices
from s2s.data.generated import dates_corpus
from s2s.tokenizer import train_tokenizers

lengths_lists = st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=400)


@settings(max_examples=60, deadline=None)
@given(
    lengths=lengths_lists,
    budget=st.integers(min_value=1, max_value=300),
    by_tokens=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_example_is_used_exactly_once_per_epoch_and_batches_keep_their_budget(lengths, budget, by_tokens, seed):
    batches = batch_indices(lengths, budget, by_tokens, random.Random(seed))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        cost = max(lengths[i] for i in batch) * len(batch) if by_tokens else len(batch)
        assert cost <= budget or len(batch) == 1  # one example longer than the budget still gets a batch


PAIRS = dates_corpus({"train": 2000}, seed=4)["train"]
ALPHABET = sorted(set("".join(s + t for s, t in PAIRS)) - {" "})  # every character the tokenizer was trained on
WORDS = st.text(alphabet=ALPHABET, min_size=1, max_size=12)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizers(TokenizerConfig(vocab_size=150), PAIRS, tmp_path_factory.mktemp("tok") / "tok").src


@settings(max_examples=150, deadline=None)
@given(words=st.lists(WORDS, min_size=1, max_size=8))
def test_text_in_the_training_alphabet_round_trips_through_the_tokenizer(tokenizer, words):
    text = " ".join(words)  # SentencePiece normalises runs of spaces, so the property is stated for single ones
    assert tokenizer.decode(tokenizer.encode([text]))[0] == text
