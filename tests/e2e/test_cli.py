"""The ``s2s`` command as a user meets it: help, ``evaluate``, and how bad input is reported.

Every command here goes through the real entry point (a subprocess), so what is asserted is what a user
sees: exit codes, stdout and stderr. A user error is one line on stderr, ``s2s: error: ...``, with exit code 2
(usage: a bad recipe, option or run directory) or 1 (runtime: a data file), and never a traceback.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import typer

from s2s.cli import app
from s2s.data.corpus import load_split
from s2s.metrics import score_corpus
from s2s.runs import load_run
from tests.helpers import (
    ENTRY_POINTS,
    ENV,
    S2S,
    TINY,
    assert_no_traceback,
    assert_user_error,
    flat,
    s2s,
    write_recipe,
)

CLICK_APP = typer.main.get_command(app)
COMMANDS = sorted(CLICK_APP.commands)

METRIC_KEYS = {"bleu", "chrf", "exact_match", "signature", "n_sentences", "seconds"}


def options_of(command) -> list[str]:
    """Every option spelling of a command, ``--help`` included, as its click command object knows them."""
    params = command.get_params(command.context_class(command, info_name=command.name))
    return [opt for p in params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)]


def arguments_of(command) -> list[str]:
    return [p.name for p in command.params if p.param_type_name == "argument"]


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory) -> Path:
    """A private copy of the trained run: evaluate writes RUN/eval/ and must not change the shared one."""
    return Path(shutil.copytree(trained_run, tmp_path_factory.mktemp("cli") / "run"))


@pytest.fixture(scope="module")
def split_pairs(run) -> list[tuple[str, str]]:
    recipe = load_run(run).recipe
    return load_split(recipe.data, "test")


# ---------------------------------------------------------------- help


def test_the_app_has_its_commands():
    assert COMMANDS == ["average", "caption", "classify", "evaluate", "generate", "serve", "tag", "train", "translate"]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_top_level_help_exits_0_and_lists_every_command(entry):
    result = s2s("--help", entry=ENTRY_POINTS[entry])
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    for name in COMMANDS:
        assert name in result.stdout
    assert "--help" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_exits_0_and_mentions_every_option_and_argument(command):
    click_command = CLICK_APP.commands[command]
    result = s2s(command, "--help")
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert options_of(click_command), "the option list must come from the command itself"
    for option in options_of(click_command):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout), f"{option} not in help"
    for argument in arguments_of(click_command):
        assert argument.lower() in result.stdout.lower()


# ---------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def evaluated_test_split(run) -> subprocess.CompletedProcess:
    return s2s("evaluate", run, "--split", "test", "--json")


def test_evaluate_split_json_prints_exactly_one_json_object_with_the_scores(evaluated_test_split):
    assert evaluated_test_split.returncode == 0, evaluated_test_split.stderr
    assert_no_traceback(evaluated_test_split)
    assert evaluated_test_split.stdout.count("\n") == 1 and evaluated_test_split.stdout.endswith("\n")
    result = json.loads(evaluated_test_split.stdout)
    assert isinstance(result, dict)
    assert set(result) >= METRIC_KEYS
    for key in ("bleu", "chrf", "exact_match"):
        assert 0.0 <= result[key] <= 100.0
    assert set(result["signature"]) == {"bleu", "chrf"}


def test_evaluate_split_scores_every_sentence_of_the_split(evaluated_test_split, split_pairs):
    assert (
        json.loads(evaluated_test_split.stdout)["n_sentences"]
        == len(split_pairs)
        == TINY["data"]["generator"]["test_size"]
    )


def test_evaluate_split_writes_one_hypothesis_per_test_sentence_to_run_eval(evaluated_test_split, run, split_pairs):
    result = json.loads(evaluated_test_split.stdout)
    hypotheses = run / "eval" / "test.hyp.txt"
    assert Path(result["hypotheses"]) == hypotheses
    lines = hypotheses.read_text(encoding="utf-8").split("\n")
    assert lines.pop() == ""
    assert len(lines) == len(split_pairs)
    assert result["exact_match"] == score_corpus(lines, [t for _, t in split_pairs])["exact_match"]


def test_evaluate_split_scores_bleu_by_source_length_and_token_accuracy(evaluated_test_split, split_pairs):
    result = json.loads(evaluated_test_split.stdout)
    buckets = result["bleu_by_length"]
    assert [b["words"] for b in buckets] == ["1-10", "11-20", ">20"]
    assert sum(b["sentences"] for b in buckets) == len(split_pairs)
    for bucket in buckets:
        assert (bucket["bleu"] is None) == (bucket["sentences"] == 0)
    assert 0.0 <= result["token_accuracy"] <= 100.0


def test_evaluate_hypotheses_are_the_models_translations(evaluated_test_split, run, split_pairs, translator):
    lines = (run / "eval" / "test.hyp.txt").read_text(encoding="utf-8").splitlines()
    assert lines == translator.best([s for s, _ in split_pairs])


EXTRA_DATES = [
    ("March 3, 2021", "2021-03-03"),
    ("the 3rd of march, 2021", "2021-03-03"),
    ("03.03.2021", "2021-03-03"),
]


def write_lines(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize(
    ("suffix", "out_option"),
    [("", False), (".gz", True)],
    ids=["plain-files-default-out-dir", "gzip-files-with-out-dir"],
)
def test_evaluate_src_ref_files_plain_or_gzip(suffix, out_option, run, split_pairs, translator, tmp_path):
    pairs = split_pairs[:10] + EXTRA_DATES
    src = write_lines(tmp_path / f"dates{suffix and '-gz'}.src{suffix}", [s for s, _ in pairs])
    ref = write_lines(tmp_path / f"dates{suffix and '-gz'}.ref{suffix}", [t for _, t in pairs])
    out_dir = tmp_path / "out" if out_option else run / "eval"
    out = out_dir / f"{src.name}.hyp.txt"
    result = s2s("evaluate", run, "--src", src, "--ref", ref, "--json", *(["--out", out_dir] if out_option else []))
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    scores = json.loads(result.stdout)
    assert set(scores) >= METRIC_KEYS
    assert scores["n_sentences"] == len(pairs)
    assert Path(scores["hypotheses"]) == out
    hypotheses = out.read_text(encoding="utf-8").splitlines()
    assert hypotheses == translator.best([s for s, _ in pairs])
    expected = score_corpus(hypotheses, [t for _, t in pairs])
    assert {k: scores[k] for k in ("bleu", "chrf", "exact_match")} == {
        k: expected[k] for k in ("bleu", "chrf", "exact_match")
    }


# ---------------------------------------------------------------- train: recipe errors


def set_key(tree: dict, dotted: str, value) -> dict:
    *sections, leaf = dotted.split(".")
    node = tree
    for section in sections:
        node = node.setdefault(section, {})
    node[leaf] = value
    return tree


RECIPE_ERRORS = [
    pytest.param(
        lambda t: set_key(t, "model.encoder.cell", "lstmm"),
        "model.encoder.cell: 'lstmm' is not one of: gru, lstm, rnn",
        id="bad-choice",
    ),
    pytest.param(
        lambda t: set_key(t, "train.lrr", 0.1),
        "train.lrr: unknown key; did you mean 'lr'?",
        id="unknown-key",
    ),
]


@pytest.mark.parametrize(("edit", "message"), RECIPE_ERRORS)
def test_train_rejects_an_invalid_recipe_naming_the_key_path(edit, message, tmp_path):
    recipe = write_recipe(tmp_path / "bad.yaml", edit(copy.deepcopy(TINY)))
    result = s2s("train", recipe, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_user_error(result, 2, f"{recipe}: {message}")
    assert not (tmp_path / "run").exists()


def test_train_rejects_a_recipe_whose_data_file_is_missing(tmp_path):
    for name in ("train.src", "train.tgt", "valid.src"):
        write_lines(tmp_path / name, ["March 3, 2021"] if name.endswith("src") else ["2021-03-03"])
    missing = tmp_path / "valid.tgt"
    data = {"format": "text"}
    for split in ("train", "valid"):
        data[split] = {side: str(tmp_path / f"{split}.{side}") for side in ("src", "tgt")}
    recipe = write_recipe(tmp_path / "text.yaml", {**copy.deepcopy(TINY), "data": data})
    result = s2s("train", recipe, "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_user_error(result, 2, f"{recipe}: data.valid.tgt: file not found: {missing}")
    assert not (tmp_path / "run").exists()


def test_train_rejects_malformed_yaml_naming_file_line_and_column(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: tiny\ndata:\n\tformat: generated\n")
    result = s2s("train", recipe, "--run-dir", tmp_path / "run", cwd=tmp_path)
    problem = "found character '\\t' that cannot start any token"
    assert_user_error(result, 2, f"{recipe}:3:1: invalid YAML: {problem}")
    assert not (tmp_path / "run").exists()


def test_train_set_with_a_value_of_the_wrong_type_is_rejected_naming_the_key(tiny_recipe_file, tmp_path):
    result = s2s("train", tiny_recipe_file, "--set", "train.lr=abc", "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"s2s: error: {tiny_recipe_file}: train.lr: ")
    assert result.stderr.endswith("(got 'abc')\n")
    assert not (tmp_path / "run").exists()


def test_train_set_without_a_value_is_rejected_showing_the_expected_form(tiny_recipe_file, tmp_path):
    result = s2s("train", tiny_recipe_file, "--set", "train.lr", "--run-dir", tmp_path / "run", cwd=tmp_path)
    assert_user_error(result, 2, "--set 'train.lr': expected KEY.PATH=VALUE, e.g. train.lr=3e-4")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- run directories


def missing_dir(tmp_path: Path, run: Path) -> Path:
    return tmp_path / "no-such-run"


def not_a_run(tmp_path: Path, run: Path) -> Path:
    (tmp_path / "plain").mkdir()
    return tmp_path / "plain"


def holds_a_recipe(tmp_path: Path, run: Path) -> Path:
    """A user's folder that happens to hold a recipe.yaml: --overwrite must not delete it."""
    folder = tmp_path / "mine"
    folder.mkdir()
    write_recipe(folder / "recipe.yaml", TINY)
    return folder


RUN_ERRORS = [
    pytest.param(
        ["evaluate", "{dir}", "--split", "test"],
        missing_dir,
        "{dir}: no such run directory",
        id="evaluate-missing-directory",
    ),
    pytest.param(
        ["translate", "--model", "{dir}"],
        not_a_run,
        "{dir}: not an s2s run (no recipe.yaml)",
        id="translate-directory-that-is-not-a-run",
    ),
    pytest.param(
        ["train", "{dir}/recipe.yaml", "--run-dir", "{dir}", "--overwrite"],
        holds_a_recipe,
        "{dir}: not an s2s run (its log.jsonl does not start with a run signature)",
        id="train-overwrite-of-a-folder-that-is-not-a-run",
    ),
]


def test_overwrite_replaces_a_run_and_nothing_else(run, tmp_path):
    copy_ = shutil.copytree(run, tmp_path / "run")
    (copy_ / "mine.txt").write_text("a file s2s did not write")
    recipe = write_recipe(tmp_path / "r.yaml", {**TINY, "train": {**TINY["train"], "max_steps": 2}})
    refused = s2s("train", recipe, "--run-dir", copy_)
    assert refused.returncode == 2 and "already holds a run; use --resume" in refused.stderr
    result = s2s("train", recipe, "--run-dir", copy_, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert not (copy_ / "mine.txt").exists() and (copy_ / "last.safetensors").is_file()


@pytest.mark.parametrize(("command", "make", "message"), RUN_ERRORS)
def test_a_directory_that_is_not_a_usable_run_is_a_usage_error_naming_it(command, make, message, run, tmp_path):
    directory = make(tmp_path, run)
    result = s2s(*[arg.format(dir=directory) for arg in command])
    assert_user_error(result, 2, message.format(dir=directory))


# ---------------------------------------------------------------- usage errors


USAGE_ERRORS = [
    pytest.param(["evaluate", "{run}", "--split", "test", "--beam", "0"], "--beam", id="evaluate-beam-0"),
    pytest.param(
        ["translate", "--model", "{run}", "--beam", "2", "--nbest", "3"],
        "--nbest 3 is larger than --beam 2",
        id="translate-nbest-over-beam",
    ),
    pytest.param(["translate"], "--model", id="translate-without-model"),
    pytest.param(["frobnicate"], "frobnicate", id="unknown-command"),
]


EVALUATION_ERRORS = [
    pytest.param(
        ["evaluate", "{run}"],
        "--split: give --split valid|test, or --src with --ref (not both)",
        id="evaluate-neither-split-nor-src",
    ),
    pytest.param(
        ["evaluate", "{run}", "--src", "{file}"],
        "--ref: --src with --ref go together",
        id="evaluate-src-without-ref",
    ),
    pytest.param(
        ["evaluate", "{run}", "--data", "{file}"],
        "--data: does not apply to a translation run (it reads --src with --ref)",
        id="evaluate-files-of-another-shape",
    ),
]


@pytest.mark.parametrize(("args", "message"), EVALUATION_ERRORS)
def test_evaluate_takes_a_split_or_the_files_of_the_runs_own_shape(args, message, run, tmp_path):
    file = write_lines(tmp_path / "one.txt", ["March 3, 2021"])
    assert_user_error(s2s(*[arg.format(run=run, file=file) for arg in args]), 2, message)


@pytest.mark.parametrize(("args", "mentions"), USAGE_ERRORS)
def test_usage_errors_exit_2_with_usage_and_the_problem(args, mentions, run, tmp_path):
    file = write_lines(tmp_path / "one.txt", ["March 3, 2021"])
    result = s2s(*[arg.format(run=run, file=file) for arg in args])
    assert_no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert "Usage: " in result.stderr
    assert mentions in flat(result.stderr)
    assert result.stdout == ""


# ---------------------------------------------------------------- attention pictures


def test_evaluate_plots_attention_of_the_first_n_sentences_as_png(run, tmp_path):
    out = tmp_path / "eval"
    result = s2s("evaluate", run, "--split", "test", "--plot-attention", "2", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    plots = json.loads(result.stdout)["attention_plots"]
    assert [Path(p).name for p in plots] == ["0001.png", "0002.png"]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    assert (out / "test.hyp.txt").is_file()


def test_translate_show_attention_draws_a_heat_map_on_stderr_and_keeps_stdout_one_line_per_input(run):
    result = subprocess.run(
        [*S2S, "translate", "--model", str(run), "--show-attention"],
        input="March 3, 2021\n",
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert "</s>" in result.stderr
    assert any(shade in result.stderr for shade in "░▒▓█")


# ---------------------------------------------------------------- interrupting training


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_training_run_saves_a_checkpoint_and_says_how_to_resume(sig, exit_code, tmp_path):
    tree = copy.deepcopy(TINY)
    tree["train"].update(max_steps=100_000, validate_every=100_000, log_every=1)
    recipe = write_recipe(tmp_path / "long.yaml", tree)
    run_dir = tmp_path / "run"
    child = subprocess.Popen(
        [*S2S, "train", str(recipe), "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    log = run_dir / "log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count('"train"') >= 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == exit_code, stderr
    assert "Traceback" not in stdout + stderr
    assert f"continue with: s2s train --resume {run_dir}" in " ".join((stdout + stderr).split())
    assert (run_dir / "last.state.pt").is_file() and (run_dir / "last.safetensors").is_file()
    resumed = s2s("train", "--resume", run_dir, "--set", "train.max_steps=60")
    assert resumed.returncode == 0, resumed.stderr
