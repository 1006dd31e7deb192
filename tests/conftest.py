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


POSITIVE, NEGATIVE = ("good", "great", "lovely", "fine"), ("bad", "awful", "dull", "poor")
FILLER = ("the", "film", "was", "plot", "acting", "very", "a", "story", "and", "quite")


def toy_reviews(count: int, seed: int) -> list[tuple[str, str]]:
    """(text, label) rows whose label is told by one sentiment word among filler: learnable in seconds."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(("pos", "neg"))
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return path


def toy_sentiment_recipe(directory: Path) -> dict:
    """A classification recipe over toy reviews written into ``directory``."""
    files = {
        name: write_tsv(directory / f"{name}.tsv", toy_reviews(size, seed))
        for name, size, seed in (("train", 1500, 1), ("valid", 100, 2), ("test", 100, 3))
    }
    return {
        "task": "classification",
        "name": "toy-sentiment",
        "data": {"format": "tsv", **{name: {"path": str(path)} for name, path in files.items()}, "max_length": 12},
        "tokenizer": {"vocab_size": 40},
        "model": {
            "encoder": {"cell": "gru", "embedding_size": 16, "hidden_size": 16, "dropout": 0.0},
            "head": {"pooling": "max", "dropout": 0.0},
        },
        "train": {"lr": 0.01, "batch_size": 32, "max_steps": 60, "validate_every": 30, "log_every": 10, "threads": 1},
        "eval": {"batch_size": 64},
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


@pytest.fixture(scope="session")
def trained_classifier(tmp_path_factory) -> Path:
    """A toy sentiment run: trained in a few seconds, good enough to tell good from bad."""
    directory = tmp_path_factory.mktemp("toy-sentiment")
    recipe_file = write_recipe(directory / "recipe.yaml", toy_sentiment_recipe(directory))
    torch.manual_seed(0)
    Trainer(load_recipe(recipe_file), directory / "run").run()
    return directory / "run"
