"""``s2s train``, ``s2s evaluate`` and ``s2s classify`` on classification data and a toy sentiment run: exit codes,
stdout and stderr as a user sees them, a pipe and a terminal."""

from __future__ import annotations

import json

from tests.helpers import assert_user_error, s2s, shell_answer, toy_sentiment_recipe, write_recipe, write_tsv


def test_a_valid_label_the_training_data_never_had_is_an_error_naming_its_line(tmp_path):
    tree = toy_sentiment_recipe(tmp_path)
    valid = write_tsv(tmp_path / "valid.tsv", [("good film", "pos"), ("so so", "meh")])
    tree["data"]["valid"] = {"path": str(valid)}
    result = s2s("train", write_recipe(tmp_path / "r.yaml", tree), "--run-dir", tmp_path / "run")
    assert_user_error(result, 1, f"{valid}:3: label 'meh' is not one of the model's labels (neg, pos)")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- a trained run


def test_evaluate_prints_accuracy_f1_and_the_confusion_matrix(trained_classifier):
    result = s2s("evaluate", trained_classifier, "--split", "test")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("accuracy") and lines[1].startswith("macro-F1")
    assert lines[2].split()[-2:] == ["neg", "pos"] and lines[3].split()[0] == "neg" and lines[4].split()[0] == "pos"
    counts = [int(n.replace(",", "")) for line in lines[3:5] for n in line.split()[1:]]
    assert sum(counts) == 100


def test_evaluate_json_on_a_split_and_on_a_users_file(trained_classifier, tmp_path):
    on_split = json.loads(s2s("evaluate", trained_classifier, "--split", "valid", "--json").stdout)
    assert {"accuracy", "macro_f1", "n_examples", "seconds", "confusion", "labels"} <= on_split.keys()
    assert on_split["n_examples"] == 100 and on_split["accuracy"] >= 90
    mine = tmp_path / "mine.jsonl"
    mine.write_text(
        "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in [("great", "pos"), ("awful plot", "neg")])
    )
    on_file = json.loads(s2s("evaluate", trained_classifier, "--data", mine, "--json").stdout)
    assert on_file["n_examples"] == 2 and on_file["accuracy"] == 100.0


def test_evaluate_names_a_line_whose_label_the_model_does_not_know(trained_classifier, tmp_path):
    mine = write_tsv(tmp_path / "mine.tsv", [("great", "pos"), ("meh", "neutral")])
    assert_user_error(
        s2s("evaluate", trained_classifier, "--data", mine),
        1,
        f"{mine}:3: label 'neutral' is not one of the model's labels (neg, pos)",
    )


def test_classify_texts_given_as_arguments(trained_classifier):
    result = s2s("classify", "--model", trained_classifier, "a great film", "awful")
    assert result.returncode == 0, result.stderr
    labels = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert labels == ["pos", "neg"]
    assert all(0.5 < float(line.split("\t")[1]) <= 1 for line in result.stdout.splitlines())


def test_classify_is_a_filter_on_a_pipe_with_one_json_object_per_line(trained_classifier):
    result = s2s("classify", "--model", trained_classifier, "--json", stdin="the film was lovely\n\nso poor\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    first, blank, last = (json.loads(lines[0]), lines[1], json.loads(lines[2]))
    assert blank == ""  # a blank line in, a blank line out: answers stay aligned with their lines
    assert (first["text"], first["label"], last["label"]) == ("the film was lovely", "pos", "neg")
    assert set(first["probabilities"]) == {"neg", "pos"}


def test_a_run_of_the_wrong_kind_is_refused_with_the_command_that_fits_it(trained_classifier, trained_run):
    assert_user_error(
        s2s("translate", "--model", trained_classifier),
        2,
        f"{trained_classifier}: is a classification run, not a translation run; use s2s classify",
    )
    assert_user_error(
        s2s("classify", "--model", trained_run, "hello"),
        2,
        f"{trained_run}: is a translation run, not a classification run; use s2s translate",
    )


def test_classify_on_a_terminal_is_the_interactive_shell(trained_classifier, tmp_path):
    answer = shell_answer("classify", trained_classifier, "what a lovely film", tmp_path / "history")
    assert answer.split("\t")[0] == "pos"
