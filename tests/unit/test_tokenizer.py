"""Tokenizers (SentencePiece models and character vocabularies) are trained from the training split, keep fixed
special ids and round-trip text."""

from __future__ import annotations

import pytest

from s2s.config import TokenizerConfig
from s2s.data.generated import dates_corpus
from s2s.errors import RecipeError
from s2s.tokenizer import BOS, EOS, PAD, UNK, TokenizerPair, strip_special, train_tokenizers

PAIRS = dates_corpus({"train": 800}, seed=2)["train"]


@pytest.mark.parametrize("kind", ["unigram", "bpe", "char"])
@pytest.mark.parametrize("joint", [True, False])
def test_tokenizers_round_trip_text_and_reload_from_the_run(tmp_path, kind, joint):
    pair = train_tokenizers(TokenizerConfig(type=kind, vocab_size=100, joint=joint), PAIRS, tmp_path / "tok")
    assert pair.joint is joint
    for source, target in PAIRS[:50]:
        assert pair.src.decode(pair.src.encode([source]))[0] == source
        assert pair.tgt.decode(pair.tgt.encode([target]))[0] == target
    again = TokenizerPair.load(tmp_path / "tok")
    assert again.src.encode(["March 3, 2021"]) == pair.src.encode(["March 3, 2021"])


def test_special_ids_are_fixed(tmp_path):
    pair = train_tokenizers(TokenizerConfig(vocab_size=100), PAIRS, tmp_path / "tok")
    sp = pair.src.sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)


def test_decoding_stops_at_eos_and_skips_padding():
    assert strip_special([BOS, 7, 8, PAD, 9, EOS, 10]) == [7, 8, 9]


def test_numbers_are_split_into_digits(tmp_path):
    pair = train_tokenizers(TokenizerConfig(vocab_size=100), PAIRS, tmp_path / "tok")
    pieces = pair.src.pieces(pair.src.encode(["1987"])[0])
    assert [p.strip("▁") for p in pieces if p.strip("▁")] == ["1", "9", "8", "7"]


def test_a_vocabulary_too_small_for_the_texts_characters_is_a_recipe_error_and_leaves_no_tokenizer(tmp_path):
    pairs = dates_corpus({"train": 300}, seed=1)["train"]  # some 50 distinct characters
    with pytest.raises(RecipeError, match=r"^tokenizer\.vocab_size: 40 is too small for the \d+ characters"):
        train_tokenizers(TokenizerConfig(vocab_size=40), pairs, tmp_path / "tokenizer")
    assert list(tmp_path.iterdir()) == []  # neither the tokenizer nor its staging folder
