"""`s2s tag` and `s2s evaluate` on a trained tagger, as a user meets them: through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helpers import assert_user_error, s2s, shell_answer, tagged_sentences, write_word_tags

LINE = "the big dog calmly sees a cat ."
TAGS = ["DET", "ADJ", "NOUN", "ADV", "VERB", "DET", "NOUN", "PUNCT"]


def test_tag_on_a_pipe_prints_word_tag_pairs_one_line_per_line_and_keeps_blank_lines(trained_tagger):
    result = s2s("tag", "--model", trained_tagger, stdin=f"{LINE}\n\na cat eats .\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert lines[0] == " ".join(f"{w}/{t}" for w, t in zip(LINE.split(), TAGS, strict=True))
    assert lines[1] == "" and lines[2] == "a/DET cat/NOUN eats/VERB ./PUNCT" and lines[3:] == [""]


def test_raw_text_is_split_into_words_unless_it_is_pretokenized(trained_tagger):
    raw = s2s("tag", "--model", trained_tagger, "the dog sees a cat.")
    assert raw.stdout.split()[-2:] == ["cat/NOUN", "./PUNCT"]  # "cat." is two words
    kept = s2s("tag", "--model", trained_tagger, "--pretokenized", "the dog sees a cat.")
    words = [pair.rsplit("/", 1)[0] for pair in kept.stdout.split()]
    assert words == ["the", "dog", "sees", "a", "cat."]  # "cat." stays one word


def test_tag_json_gives_each_word_its_tag_and_probability(trained_tagger):
    result = s2s("tag", "--model", trained_tagger, "--json", LINE)
    answer = json.loads(result.stdout)
    assert answer["text"] == LINE
    assert [w["tag"] for w in answer["words"]] == TAGS
    assert all(0 < w["probability"] <= 1 for w in answer["words"])


def test_tag_conllu_writes_a_sentence_per_line(trained_tagger):
    result = s2s("tag", "--model", trained_tagger, "--conllu", "a cat eats .")
    assert result.stdout.split("\n")[:3] == [
        "# text = a cat eats .",
        "1\ta\t_\tDET\t_\t_\t_\t_\t_\t_",
        "2\tcat\t_\tNOUN\t_\t_\t_\t_\t_\t_",
    ]


def test_evaluate_scores_a_split_with_oov_accuracy_and_a_per_tag_table(trained_tagger):
    result = s2s("evaluate", trained_tagger, "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert {"accuracy", "oov_accuracy", "macro_f1", "per_tag", "n_words", "n_sentences", "seconds"} <= set(scores)
    assert scores["n_sentences"] == 60 and scores["n_oov_words"] > 0
    assert set(scores["per_tag"]) == {"ADJ", "ADV", "DET", "NOUN", "PUNCT", "VERB"}
    predicted = [line.split("\t") for line in Path(scores["predictions"]).read_text().splitlines() if line]
    test_file = yaml.safe_load((trained_tagger / "recipe.yaml").read_text())["data"]["test"]["path"]
    gold = [line.split("\t") for line in Path(test_file).read_text().splitlines() if line]
    assert [row[1] for row in predicted] == [word for word, _ in gold]  # every word, in order
    right = sum(row[3] == tag for row, (_, tag) in zip(predicted, gold, strict=True))
    assert round(100 * right / len(gold), 2) == scores["accuracy"]


def test_evaluate_counts_a_tag_the_model_never_saw_instead_of_failing(trained_tagger, tmp_path):
    sentences = tagged_sentences(5, seed=7, adverbs=["calmly"])
    sentences[0] = [("xyz", "INTJ"), *sentences[0]]
    data = write_word_tags(tmp_path / "mine.tsv", sentences)
    result = s2s("evaluate", trained_tagger, "--data", data, "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["unknown_tags"] == {"INTJ": 1}
    assert scores["n_words"] == sum(len(s) for s in sentences)


def test_a_malformed_evaluation_file_names_its_line(trained_tagger, tmp_path):
    data = tmp_path / "bad.tsv"
    data.write_text("the\tDET\ncat NOUN\n", encoding="utf-8")
    result = s2s("evaluate", trained_tagger, "--data", data)
    assert result.returncode == 1 and result.stderr.startswith(f"s2s: error: {data}:2: ")


def test_tag_refuses_a_run_of_another_kind_naming_the_command_that_fits(trained_tagger, trained_classifier):
    assert_user_error(
        s2s("tag", "--model", trained_classifier, "hello"),
        2,
        f"{trained_classifier}: is a classification run, not a tagging run; use s2s classify",
    )
    assert_user_error(
        s2s("classify", "--model", trained_tagger, "hello"),
        2,
        f"{trained_tagger}: is a tagging run, not a classification run; use s2s tag",
    )


def test_tag_on_a_terminal_is_the_interactive_shell(trained_tagger, tmp_path):
    answer = shell_answer("tag", trained_tagger, "a cat eats .", tmp_path / "history")
    assert answer == "a/DET cat/NOUN eats/VERB ./PUNCT"
