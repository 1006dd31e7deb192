"""Tagging (synchronised many-to-many): one tag per word, words read as themselves and as their characters."""

from __future__ import annotations

import json

import pytest
import torch

from s2s.config import TaggerModelConfig
from s2s.data.batching import collate_tagged
from s2s.metrics import tagging_scores
from s2s.models import build_tagger
from s2s.pipelines.tagging import TaggedIds, Vocabulary
from s2s.tokenizer import UNK
from tests.helpers import write_recipe

SENTENCES = [["The", "old", "man", "sat", "."], ["Dogs", "bark"], ["A", "cat", "sees", "a", "big", "dog", "."]]


def log_records(run_dir, event):
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_a_tagger_learns_a_generated_task_exactly_and_tags_unseen_words_by_their_spelling(trained_tagger):
    last = log_records(trained_tagger, "valid")[-1]
    assert (last["accuracy"], last["oov_accuracy"]) == (100.0, 100.0)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("characters", [16, 0], ids=["with-characters", "words-alone"])
def test_a_padded_batch_tags_each_sentence_as_it_tags_it_alone(cell, characters):
    torch.manual_seed(0)
    config = TaggerModelConfig(
        characters={"embedding_size": characters, "hidden_size": 8, "cell": cell},
        encoder={"cell": cell, "embedding_size": 12, "hidden_size": 10, "layers": 2, "dropout": 0.0},
        head={"dropout": 0.0},
    )
    vocabulary = Vocabulary.of(tagged(SENTENCES), max_chars=5)
    model = build_tagger(config, len(vocabulary.words), len(vocabulary.chars), 4).eval()
    words, chars = vocabulary.encode(SENTENCES)
    with torch.no_grad():
        together = model.tag(collate_tagged(words, chars, None, [0, 1, 2]))
        for i in range(len(SENTENCES)):
            alone = model.tag(collate_tagged([words[i]], [chars[i]], None, [i]))
            torch.testing.assert_close(together[i, : len(words[i])], alone[0], atol=1e-5, rtol=1e-5)


def tagged(sentences: list[list[str]]):
    from s2s.data.tagged import TaggedSentences

    return TaggedSentences([list(s) for s in sentences], [["X"] * len(s) for s in sentences], ["here"] * 3)


def test_the_vocabulary_reads_unseen_words_as_unknown_but_keeps_their_characters():
    vocabulary = Vocabulary.of(tagged(SENTENCES), max_chars=3)
    (words,), (chars,) = vocabulary.encode([["The", "Zebra"]])
    assert words[0] != UNK and words[1] == UNK
    assert len(chars[1]) == 3 and chars[1][0] == UNK and chars[1][1] == vocabulary.char_ids["e"]  # 'Z' unseen
    assert vocabulary.tag_ids_of([["X", "NOUN"]]) == [[0, -1]]


def test_the_vocabulary_is_saved_and_read_back(tmp_path):
    vocabulary = Vocabulary.of(tagged(SENTENCES), max_chars=4)
    vocabulary.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert (again.words, again.chars, again.tags, again.max_chars) == (
        vocabulary.words,
        vocabulary.chars,
        vocabulary.tags,
        4,
    )


def test_scores_count_words_unseen_words_and_every_tag():
    tags = ["ADJ", "NOUN", "VERB"]
    gold = [1, 1, 2, 0, -1]  # the last gold tag is one the model never saw: a miss
    predicted = [1, 2, 2, 0, 1]
    unseen = [False, True, True, False, False]
    scores = tagging_scores(gold, predicted, unseen, tags)
    assert scores["accuracy"] == 60.0 and scores["oov_accuracy"] == 50.0
    assert scores["per_tag"]["NOUN"] == {"precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2}
    assert scores["per_tag"]["VERB"] == {"precision": 50.0, "recall": 100.0, "f1": 66.67, "support": 1}
    assert scores["macro_f1"] == round((100.0 + 50.0 + 66.67) / 3, 2)
    assert (scores["n_words"], scores["n_oov_words"]) == (5, 2)


def test_a_batch_counts_words_and_pads_tags_out_of_the_loss():
    batch = TaggedIds([[4, 5, 6], [7]], [[[2], [3, 4], [5]], [[6, 7]]], [[0, 1, 2], [1]]).batch([0, 1])
    assert (batch.n_tokens, batch.n_predictions) == (4, 4)
    assert batch.tags[1].tolist() == [1, -100, -100] and batch.char_lengths.tolist() == [[1, 2, 1], [2, 0, 0]]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"encoder": {"reverse_source": True}}, "model.encoder.reverse_source: does not apply to a tagger"),
        ({"head": {"pooling": "max"}}, "model.head.pooling: unknown key; known keys: hidden_size, dropout"),
    ],
)
def test_settings_that_do_not_apply_to_a_tagger_are_refused_at_load_and_a_saved_recipe_reads_back(
    tmp_path, model, message
):
    from s2s.config import dump_recipe, load_recipe
    from s2s.errors import RecipeError
    from tests.helpers import toy_tagging_recipe

    tree = {**toy_tagging_recipe(tmp_path), "model": model}
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(tmp_path / "r.yaml", tree))
    recipe = load_recipe(write_recipe(tmp_path / "good.yaml", toy_tagging_recipe(tmp_path)))
    dump_recipe(recipe, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml") == recipe
