"""`s2s generate` and `s2s evaluate` on a trained language model, and `--sample` on the search commands, as a
user meets them: through the real entry point."""

from __future__ import annotations

import json

import pytest

from tests.helpers import assert_no_traceback, assert_user_error, flat, s2s, write_text


def test_generate_with_a_seed_prints_the_same_play_twice(trained_language_model):
    args = ("generate", "--model", trained_language_model, "--prompt", "ROMEO:", "--max-length", "80", "--seed", "1")
    first, second = s2s(*args), s2s(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.startswith("ROMEO:\n")  # the prompt, then what the model writes after it
    assert len(first.stdout) == len("ROMEO:") + 80 + 1  # 80 characters and the line end


def test_generate_several_texts_as_json(trained_language_model):
    result = s2s("generate", "--model", trained_language_model, "--num", "3", "--seed", "2", "--json")
    texts = [json.loads(line) for line in result.stdout.splitlines()]
    assert [t["prompt"] for t in texts] == ["", "", ""] and len({t["text"] for t in texts}) == 3


def test_greedy_generation_needs_no_seed(trained_language_model):
    args = ("generate", "--model", trained_language_model, "--temperature", "0", "--prompt", "JULIET:\n")
    assert s2s(*args).stdout == s2s(*args).stdout


@pytest.mark.parametrize(
    ("option", "value", "mentions"),
    [
        ("--top-p", "0", "--top-p"),
        ("--top-p", "1.5", "--top-p"),
        ("--top-k", "0", "--top-k"),
        ("--temperature", "-1", "--temperature"),
    ],
)
def test_impossible_sampling_settings_are_usage_errors(trained_language_model, option, value, mentions):
    result = s2s("generate", "--model", trained_language_model, option, value)
    assert_no_traceback(result)
    assert result.returncode == 2 and mentions in flat(result.stderr) and result.stdout == ""


def test_a_prompt_with_characters_the_model_never_saw_is_an_error_naming_them(trained_language_model):
    result = s2s("generate", "--model", trained_language_model, "--prompt", "ROMEO½")
    assert_user_error(result, 2, "--prompt: characters the model never saw in training: '½' (U+00BD)")


def test_evaluate_scores_the_valid_text_in_nats_bits_per_character_and_perplexity(trained_language_model):
    result = s2s("evaluate", trained_language_model, "--split", "valid", "--json")
    scores = json.loads(result.stdout)
    assert set(scores) == {"loss", "bits_per_char", "perplexity", "n_chars", "n_tokens", "unknown_chars", "seconds"}
    assert scores["bits_per_char"] == pytest.approx(scores["loss"] / 0.693147, abs=1e-3)  # a character a token
    assert scores["n_chars"] == scores["n_tokens"] > 1000 and scores["unknown_chars"] == 0
    assert scores["loss"] < 1.5  # the play is easy: far below the 3.2 nats of guessing among its characters


def test_evaluate_a_text_file_counts_the_characters_the_model_never_saw(trained_language_model, tmp_path):
    text = write_text(tmp_path / "other.txt.gz", "ROMEO:\ngood night, Zoë.\n")
    result = s2s("evaluate", trained_language_model, "--text", text, "--json")
    scores = json.loads(result.stdout)
    assert scores["unknown_chars"] == 2 and scores["n_chars"] == 24  # Z and ë
    report = s2s("evaluate", trained_language_model, "--text", text).stdout
    assert "characters unseen in training, scored as unknown: 'Z' (1), 'ë' (1)" in report


def test_generate_refuses_a_run_of_another_kind(trained_run):
    result = s2s("generate", "--model", trained_run)
    assert_user_error(result, 2, f"{trained_run}: is a translation run, not a language_model run; use s2s translate")


def test_translate_can_sample_several_translations_repeatably(trained_run):
    args = ("translate", "--model", trained_run, "--sample", "--nbest", "3", "--seed", "4", "--temperature", "1.5")
    first = s2s(*args, stdin="March 3, 2021\n")
    assert first.returncode == 0, first.stderr
    assert first.stdout == s2s(*args, stdin="March 3, 2021\n").stdout
    assert [line.split("\t")[0] for line in first.stdout.splitlines()] == ["1", "2", "3"]


def test_sampling_settings_without_sample_are_refused(trained_run):
    result = s2s("translate", "--model", trained_run, "--top-k", "5", stdin="March 3, 2021\n")
    assert (
        result.returncode == 2 and "--top-k" in flat(result.stderr) and "applies with --sample" in flat(result.stderr)
    )
