"""Bad input, command by command: one line on stderr, the right exit code, no traceback, nothing half-written.

Each row runs the real entry point. ``made`` is the path that must not exist afterwards (a run directory or an
output file the command would have written).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def text_recipe(tmp: Path, train_src: bytes, train_tgt: bytes) -> Path:
    """A recipe over text files with the given training bytes (valid files are fine)."""
    (tmp / "train.de").write_bytes(train_src)
    (tmp / "train.en").write_bytes(train_tgt)
    (tmp / "valid.de").write_bytes(b"eins\n")
    (tmp / "valid.en").write_bytes(b"one\n")
    tree = copy.deepcopy(TINY)
    tree["data"] = {
        "format": "text",
        "train": {"src": str(tmp / "train.de"), "tgt": str(tmp / "train.en")},
        "valid": {"src": str(tmp / "valid.de"), "tgt": str(tmp / "valid.en")},
    }
    path = tmp / "r.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def labelled_recipe(tmp: Path, train_tsv: str) -> Path:
    """A classification recipe whose training file has the given text (its valid file is fine)."""
    (tmp / "train.tsv").write_text(train_tsv)
    (tmp / "valid.tsv").write_text("text\tlabel\ngood\t1\nbad\t0\n")
    tree = {
        "task": "classification",
        "data": {"train": {"path": str(tmp / "train.tsv")}, "valid": {"path": str(tmp / "valid.tsv")}},
        "train": {"threads": 1},
    }
    return recipe_with(tmp, yaml.safe_dump(tree))


def recipe_with(tmp: Path, text: str) -> Path:
    path = tmp / "r.yaml"
    path.write_text(text)
    return path


CASES = {
    "train: malformed YAML": (
        lambda tmp, run: ["train", str(recipe_with(tmp, "data: {format: text\n")), "--run-dir", str(tmp / "new")],
        2,
        "invalid YAML",
        "new",
    ),
    "train: unknown key": (
        lambda tmp, run: [
            "train",
            str(recipe_with(tmp, yaml.safe_dump({**TINY, "tokeniser": {}}))),
            "--run-dir",
            str(tmp / "new"),
        ],
        2,
        "tokeniser: unknown key; did you mean 'tokenizer'?",
        "new",
    ),
    "train: wrong type": (
        lambda tmp, run: [
            "train",
            str(recipe_with(tmp, yaml.safe_dump({**TINY, "train": {"batch_size": "many"}}))),
            "--run-dir",
            str(tmp / "new"),
        ],
        2,
        "train.batch_size: input should be a valid integer",
        "new",
    ),
    "train: missing data file": (
        lambda tmp, run: [
            "train",
            str(text_recipe(tmp, b"a\n", b"b\n")),
            "--set",
            "data.valid.src=nope.de",
            "--run-dir",
            str(tmp / "new"),
        ],
        2,
        "data.valid.src: file not found: nope.de",
        "new",
    ),
    "train: empty data files": (
        lambda tmp, run: ["train", str(text_recipe(tmp, b"", b"")), "--run-dir", str(tmp / "new")],
        1,
        "data.train: the train split is empty",
        "new",
    ),
    "train: parallel files of different lengths": (
        lambda tmp, run: ["train", str(text_recipe(tmp, b"a\nb\nc\n", b"x\ny\n")), "--run-dir", str(tmp / "new")],
        1,
        "has 3 lines but",
        "new",
    ),
    "train: bytes that are not UTF-8": (
        lambda tmp, run: [
            "train",
            str(text_recipe(tmp, b"gut\nschlecht \xff\n", b"good\nbad\n")),
            "--run-dir",
            str(tmp / "new"),
        ],
        1,
        "train.de:2: not valid UTF-8",
        "new",
    ),
    "evaluate: a directory that is not a run": (
        lambda tmp, run: ["evaluate", str(tmp), "--split", "test"],
        2,
        "not an s2s run (no recipe.yaml)",
        None,
    ),
    "evaluate: a missing source file": (
        lambda tmp, run: [
            "evaluate",
            str(run),
            "--src",
            str(tmp / "no.de"),
            "--ref",
            str(tmp / "no.en"),
            "--out",
            str(tmp / "out"),
        ],
        1,
        "no.de: file not found",
        "out",
    ),
    "evaluate: an output folder that cannot be made": (
        lambda tmp, run: ["evaluate", str(run), "--split", "test", "--out", str(blocker(tmp) / "sub")],
        1,
        "a-file",
        None,
    ),
    "translate: --model is not a run": (
        lambda tmp, run: ["translate", "--model", str(tmp), "--output", str(tmp / "out.txt")],
        2,
        "not an s2s run (no recipe.yaml)",
        "out.txt",
    ),
    "translate: an output file that cannot be written": (
        lambda tmp, run: ["translate", "--model", str(run), "--output", str(blocker(tmp) / "out.txt")],
        1,
        "a-file",
        None,
    ),
    "caption: a translation run": (
        lambda tmp, run: ["caption", "--model", str(run), str(blocker(tmp))],
        2,
        "is a translation run, not a captioning run; use s2s translate",
        None,
    ),
    "classify: a translation run": (
        lambda tmp, run: ["classify", "--model", str(run), "a fine film"],
        2,
        "is a translation run, not a classification run; use s2s translate",
        None,
    ),
    "classify: --model is not a run": (
        lambda tmp, run: ["classify", "--model", str(tmp), "a fine film"],
        2,
        "not an s2s run (no recipe.yaml)",
        None,
    ),
    "train: a classification row without a label": (
        lambda tmp, run: [
            "train",
            str(labelled_recipe(tmp, "text\tlabel\ngood\t1\nbad\t\n")),
            "--run-dir",
            str(tmp / "new"),
        ],
        1,
        "train.tsv:3: no label in column 'label'",
        "new",
    ),
    "train: a captioning recipe whose image folder is missing": (
        lambda tmp, run: [
            "train",
            str(
                recipe_with(
                    tmp,
                    yaml.safe_dump(
                        {
                            "task": "captioning",
                            "data": {
                                "format": "flickr8k",
                                "image_dir": "nowhere",
                                "captions": "captions.txt",
                                "train": {"images": "train.txt"},
                                "valid": {"images": "valid.txt"},
                            },
                        }
                    ),
                )
            ),
            "--run-dir",
            str(tmp / "new"),
        ],
        2,
        "data.image_dir: no such folder: nowhere",
        "new",
    ),
    "average: a directory that is not a run": (
        lambda tmp, run: ["average", str(tmp)],
        2,
        "not an s2s run (no recipe.yaml)",
        None,
    ),
}


def blocker(tmp: Path) -> Path:
    """A plain file where a folder would have to be."""
    path = tmp / "a-file"
    path.write_text("x")
    return path


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_clear_line_with_an_exit_code_and_leaves_nothing_behind(case, trained_run, tmp_path):
    make_args, exit_code, message, made = CASES[case]
    args = make_args(tmp_path, trained_run)
    result = subprocess.run(
        [sys.executable, "-m", "s2s", *args],
        input="March 3, 2021\n",
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == exit_code, result.stderr
    assert result.stderr.startswith("s2s: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    if made is not None:
        assert not (tmp_path / made).exists()
    assert not list(tmp_path.rglob(".*.tmp*")) and not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_attention_asked_of_a_model_without_attention_is_a_usage_error(tmp_path):
    from s2s.config import load_recipe
    from s2s.train import Trainer
    from tests.helpers import write_recipe

    tree = copy.deepcopy(TINY)
    tree["model"]["decoder"].update(attention="none", input_feeding=False)
    tree["train"].update(max_steps=4, validate_every=4)
    Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run").run()
    result = subprocess.run(
        [sys.executable, "-m", "s2s", "translate", "--model", str(tmp_path / "run"), "--show-attention"],
        input="March 3, 2021\n",
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "s2s: error: --show-attention: this model has no attention (its model.decoder.attention is none)\n"
    )
    evaluation = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "s2s", "evaluate", str(tmp_path / "run"), "--split", "valid", "--plot-attention", "2",
         "--out", str(evaluation)],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and not evaluation.exists()
    assert result.stderr == (
        "s2s: error: --plot-attention: this model has no attention (its model.decoder.attention is none)\n"
    )
