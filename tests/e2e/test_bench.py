"""tools/bench.py end to end on the tiny recipe: figures as JSON on the last line, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from s2s import kernels
from tests.helpers import ROOT, SHAPES_RUN, TINY, toy_sentiment_recipe, toy_tagging_recipe, write_recipe

BENCH = ROOT / "tools" / "bench.py"
KEYS = (
    "train_tokens_per_s",
    "train_examples_per_s",
    "decode_greedy_per_s",
    "decode_beam5_per_s",
    "peak_rss_mb",
    "padding_fraction",
    "flops_per_token",
    "mfu",
    "device",
    "dtype",
)


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_bench_reports_positive_figures_as_json(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.yaml", TINY)
    done = bench(
        str(recipe),
        "--steps",
        "3",
        "--warmup",
        "1",
        "--decode-sentences",
        "8",
        "--precision",
        "fp32",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in KEYS:
        assert key in result, key
    for key in ("train_tokens_per_s", "decode_greedy_per_s", "decode_beam5_per_s", "peak_rss_mb"):
        assert result[key] > 0, key
    assert 0 <= result["padding_fraction"] < 1
    assert result["flops_per_token"] > 0
    assert 0 < result["mfu"] < 1
    assert result["dtype"] == "fp32"
    assert (result["task"], result["decode_unit"]) == ("translation", "sentences")
    assert result["device"] in ("cpu", "cuda")
    assert result["cpu_kernels"] == (result["device"] == "cpu" and kernels.available())
    assert result["train_steps"] == 3
    assert [row["dtype"] for row in result["rows"]] == ["fp32"]
    assert done.stdout.count("\n") == 1  # stdout is the JSON line alone
    assert "train tok/s" in done.stderr  # the table goes to stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--set", "model.encoder.cell=lstmm"], 2, "model.encoder.cell: 'lstmm' is not one of"),
        (["--set", "train.device=cpu", "--precision", "fp16"], 2, "fp16 needs a CUDA device"),
    ],
)
def test_bench_errors_are_one_line(tmp_path, args, code, message):
    recipe = write_recipe(tmp_path / "tiny.yaml", TINY)
    done = bench(str(recipe), *args)
    assert done.returncode == code
    assert done.stderr.startswith("bench: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("make", "task", "unit", "searches"),
    [
        (lambda directory: toy_sentiment_recipe(directory), "classification", "texts", False),
        (lambda directory: SHAPES_RUN, "captioning", "captions", True),
        (lambda directory: toy_tagging_recipe(directory), "tagging", "sentences", False),
    ],
    ids=["classification", "captioning", "tagging"],
)
def test_bench_measures_every_problem_shape_through_its_pipeline(tmp_path, make, task, unit, searches):
    recipe = write_recipe(tmp_path / "recipe.yaml", make(tmp_path))
    done = bench(
        str(recipe), "--steps", "2", "--warmup", "1", "--decode-sentences", "4", "--precision", "fp32", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["task"], result["decode_unit"]) == (task, unit)
    assert result["train_tokens_per_s"] > 0 and result["train_examples_per_s"] > 0
    assert result["decode_greedy_per_s"] > 0
    assert ("decode_beam5_per_s" in result) == searches


def test_an_lstm_counts_the_work_of_its_four_gates(tmp_path):
    """nn.LSTM runs as one fused operator that the FLOP counter does not see; counted, an LSTM encoder costs more
    than a GRU one (four gates against three), not nothing."""
    recipe = write_recipe(tmp_path / "recipe.yaml", toy_sentiment_recipe(tmp_path))
    counted = {}
    for cell in ("gru", "lstm"):
        done = bench(str(recipe), "--set", f"model.encoder.cell={cell}", "--steps", "1", "--warmup", "0",
                     "--decode-sentences", "0", "--precision", "fp32", "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        counted[cell] = json.loads(done.stdout.strip().splitlines()[-1])["flops_per_token"]
    assert counted["lstm"] > counted["gru"] > 0
