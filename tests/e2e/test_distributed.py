"""Training across processes: two CPU processes with gloo train exactly as one process on the same global batch,
and a run resumes on another number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import TINY, write_recipe

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RECIPE = {**TINY, "train": {**TINY["train"], "max_steps": 20, "validate_every": 10, "batch_size": 32}}


def train(*args, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "s2s", "train", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result


def validation_losses(run_dir) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "valid"}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ddp")
    recipe = write_recipe(directory / "tiny.yaml", RECIPE)
    train(recipe, "--run-dir", directory / "one", cwd=directory)
    return directory, recipe


def test_two_gloo_processes_train_as_one_process_on_the_same_global_batch(one_process):
    directory, recipe = one_process
    train(recipe, "--run-dir", directory / "two", "--nproc", "2", cwd=directory)
    one, two = validation_losses(directory / "one"), validation_losses(directory / "two")
    assert list(one) == list(two) == [10, 20]
    assert two == pytest.approx(one, abs=2e-4)
    assert (directory / "two" / "last.safetensors").is_file()


def test_a_run_started_on_two_processes_resumes_on_one(one_process):
    directory, recipe = one_process
    train(recipe, "--run-dir", directory / "mixed", "--nproc", "2", "--set", "train.max_steps=10", cwd=directory)
    train("--resume", directory / "mixed", "--set", "train.max_steps=20", cwd=directory)
    assert validation_losses(directory / "mixed") == pytest.approx(validation_losses(directory / "one"), abs=2e-4)
