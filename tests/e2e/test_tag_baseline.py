"""tools/tag_baseline.py end to end: the most-frequent-tag baseline's figures on a corpus worked out by hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, conllu_text, tagged_tsv, toy_sentiment_recipe, write_recipe, write_text

TOOL = ROOT / "tools" / "tag_baseline.py"

# "runs" is a VERB once and a NOUN once: the tie goes to VERB, the more frequent tag overall (3 against 2), which
# unseen words get too
TRAIN = [
    [("the", "DET"), ("dog", "NOUN"), ("runs", "VERB")],
    [("we", "PRON"), ("sit", "VERB"), ("and", "CCONJ"), ("walk", "VERB")],
    [("runs", "NOUN")],
]
# seen: the → DET (right), runs → VERB (wrong); unseen: jump → VERB (right), cat → VERB (wrong), quickly → VERB
# (wrong: ADV was never seen in training)
HELD = [[("the", "DET"), ("runs", "NOUN"), ("jump", "VERB")], [("cat", "NOUN"), ("quickly", "ADV")]]
FIGURES = {"accuracy": 40.0, "oov_accuracy": 33.33, "n_words": 5, "n_oov_words": 3, "unknown_tags": ["ADV"]}


def baseline(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def as_conllu(sentences: list[list[tuple[str, str]]]) -> str:
    """The sentences as CoNLL-U, each tag as the UPOS and its lowercase as the XPOS."""
    return conllu_text(
        [[f"{i} {word} _ {tag} {tag.lower()} _ 0 dep _ _" for i, (word, tag) in enumerate(s, 1)] for s in sentences]
    )


def test_word_tag_files_give_the_figures_worked_out_by_hand(tmp_path):
    train = write_text(tmp_path / "train.tsv", tagged_tsv(TRAIN))
    held = write_text(tmp_path / "held.tsv", tagged_tsv(HELD))
    done = baseline("--train", train, "--eval", held, "--json")
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert {key: scores[key] for key in FIGURES} == FIGURES
    assert scores["column"] == "tags"
    text = baseline("--train", train, "--eval", held)
    assert text.stdout == (
        "most frequent tag (tags): accuracy 40.00 % over 5 words; unseen in training: 3 words (60.0 %), "
        f"accuracy 33.33 %; macro-F1 {scores['macro_f1']:.2f}\n"
        "tags never seen in training (always missed): ADV\n"
    )


@pytest.mark.parametrize("column", ["upos", "xpos"])
def test_conllu_files_give_the_same_figures_in_any_column(tmp_path, column):
    train = write_text(tmp_path / "train.conllu.gz", as_conllu(TRAIN))
    held = write_text(tmp_path / "held.conllu", as_conllu(HELD))
    done = baseline("--train", train, "--eval", held, "--column", column, "--json")
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    unknown = ["ADV" if column == "upos" else "adv"]
    assert {key: scores[key] for key in FIGURES} == {**FIGURES, "unknown_tags": unknown}


def test_a_tagging_recipe_scores_its_valid_split(tmp_path):
    train = write_text(tmp_path / "train.tsv", tagged_tsv(TRAIN))
    held = write_text(tmp_path / "held.tsv", tagged_tsv(HELD))
    data = {"format": "tsv", "train": {"path": str(train)}, "valid": {"path": str(held)}}
    recipe = write_recipe(tmp_path / "tagging.yaml", {"task": "tagging", "data": data})
    done = baseline(recipe, "--json")
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert {key: scores[key] for key in FIGURES} == FIGURES


def test_a_recipe_of_another_task_is_refused_in_one_line(tmp_path):
    recipe = write_recipe(tmp_path / "sentiment.yaml", toy_sentiment_recipe(tmp_path))
    done = baseline(recipe)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"tag_baseline: error: {recipe}: a classification recipe; this baseline is for tagging\n"


def test_a_malformed_file_is_named_with_its_line(tmp_path):
    train = write_text(tmp_path / "train.tsv", "the\tDET\ndog NOUN\n")
    done = baseline("--train", train, "--eval", train)
    assert done.returncode == 1
    assert done.stderr == f"tag_baseline: error: {train}:2: expected word<TAB>tag, found 1 tab-separated field\n"


@pytest.mark.parametrize(
    "args",
    [[], ["--train", "a.tsv"], ["r.yaml", "--train", "a.tsv", "--eval", "b.tsv"], ["r.yaml", "--column", "xpos"]],
)
def test_a_recipe_or_both_files_are_required(args):
    done = baseline(*args)
    assert done.returncode == 2 and "tag_baseline.py: error:" in done.stderr
