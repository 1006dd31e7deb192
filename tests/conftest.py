"""Shared fixtures: tiny recipes and one tiny trained run, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from s2s.config import load_recipe
from s2s.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY = {
    "name": "tiny",
    "data": {
        "format": "generated",
        "generator": {"task": "dates", "train_size": 3000, "valid_size": 64, "test_size": 64, "seed": 3},
        "max_length": 40,
    },
    "tokenizer": {"type": "unigram", "vocab_size": 120},
    "model": {
        "encoder": {"embedding_size": 32, "hidden_size": 32, "dropout": 0.0},
        "decoder": {
            "embedding_size": 32,
            "hidden_size": 32,
            "dropout": 0.0,
            "attention": "bahdanau",
            "input_feeding": True,
        },
    },
    "train": {
        "lr": 0.005,
        "batch_size": 32,
        "max_steps": 40,
        "validate_every": 20,
        "log_every": 10,
        "label_smoothing": 0.0,
        "threads": 1,
    },
    "eval": {"batch_size": 16},
}


def write_recipe(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture
def tiny_recipe_file(tmp_path) -> Path:
    return write_recipe(tmp_path / "tiny.yaml", TINY)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run directory trained for a few seconds: enough to exercise every command, not to be good."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    recipe_file = write_recipe(run_dir.parent / "tiny.yaml", TINY)
    torch.manual_seed(0)
    Trainer(load_recipe(recipe_file), run_dir).run()
    return run_dir
