"""Runs that survive faults, through the real command: a run killed at a random step resumes exactly, and
``s2s average`` writes the mean of the last checkpoints, which ``s2s evaluate`` then scores."""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from s2s.checkpoint import step_checkpoints
from s2s.config import load_recipe
from s2s.train import Trainer
from tests.helpers import TINY, write_recipe


def valid_losses(run_dir) -> list[tuple[int, float]]:
    records = map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
    return [(r["step"], r["loss"]) for r in records if r["event"] == "valid"]


def test_a_run_killed_at_a_random_step_and_resumed_gives_the_same_validation_losses(tmp_path):
    tree = copy.deepcopy(TINY)
    tree["model"]["encoder"]["dropout"] = tree["model"]["decoder"]["dropout"] = 0.2  # RNG state must come back too
    tree["train"].update(max_steps=36, validate_every=4, log_every=1)
    recipe = write_recipe(tmp_path / "r.yaml", tree)
    Trainer(load_recipe(recipe), tmp_path / "whole").run()
    expected = dict(valid_losses(tmp_path / "whole"))

    kill_after = random.Random(7).choice(range(8, 30))  # a step, not necessarily a checkpoint
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "s2s", "train", str(recipe), "--run-dir", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    log, deadline = killed / "log.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline:
        records = map(json.loads, log.read_text().splitlines()) if log.is_file() else []
        steps = [record["step"] for record in records if "step" in record]
        if steps and max(steps) >= kill_after:
            break
        time.sleep(0.01)
    child.kill()
    child.wait()
    assert (killed / "last.state.pt").is_file(), "killed before the first checkpoint: choose a later step"
    Trainer(load_recipe(killed / "recipe.yaml"), killed, resume=True).run()
    resumed = valid_losses(killed)
    assert [step for step, _ in resumed][-1] == 36
    for step, loss in resumed:
        assert loss == pytest.approx(expected[step], abs=1e-5), step


def test_average_writes_the_mean_of_the_last_n_checkpoints_and_it_can_be_evaluated(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    s2s = [sys.executable, "-m", "s2s"]
    done = subprocess.run([*s2s, "average", str(run), "--last", "2"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    first, second = (load_file(str(p)) for p in step_checkpoints(run)[-2:])
    averaged = load_file(str(run / "averaged.safetensors"))
    for name, tensor in averaged.items():
        torch.testing.assert_close(tensor, (first[name] + second[name]) / 2)
    scored = subprocess.run(
        [*s2s, "evaluate", str(run), "--split", "test", "--checkpoint", "averaged", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert scored.returncode == 0, scored.stderr
    too_many = subprocess.run([*s2s, "average", str(run), "--last", "9"], capture_output=True, text=True, env=env)
    assert too_many.returncode == 2
    assert too_many.stderr.strip().endswith("fewer than --last 9")
