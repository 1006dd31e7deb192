"""Shared fixtures: tiny recipes and one tiny trained run, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s2s.config import load_recipe
from s2s.runs import load_run
from s2s.train import Trainer
from tests.helpers import (
    SHAPES_RUN,
    TINY,
    toy_language_model_recipe,
    toy_sentiment_recipe,
    toy_tagging_recipe,
    write_recipe,
)


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


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory) -> Path:
    """A captioning run of generated shapes pictures, trained in a few seconds."""
    directory = tmp_path_factory.mktemp("shapes")
    torch.manual_seed(0)
    Trainer(load_recipe(write_recipe(directory / "r.yaml", SHAPES_RUN)), directory / "run").run()
    return directory / "run"


@pytest.fixture(scope="module")
def translator(trained_run):
    """The trained run's translator, loaded in this process: what the command's output is checked against."""
    return load_run(trained_run).predictor


@pytest.fixture(scope="session")
def trained_tagger(tmp_path_factory) -> Path:
    """A tagger of generated sentences, trained in a few seconds; its valid adverbs never occur in training."""
    directory = tmp_path_factory.mktemp("toy-tagging")
    recipe_file = write_recipe(directory / "recipe.yaml", toy_tagging_recipe(directory))
    torch.manual_seed(0)
    Trainer(load_recipe(recipe_file), directory / "run").run()
    return directory / "run"


@pytest.fixture(scope="session")
def trained_language_model(tmp_path_factory) -> Path:
    """A character-level language model of a toy play, trained in a few seconds."""
    directory = tmp_path_factory.mktemp("toy-play")
    recipe_file = write_recipe(directory / "recipe.yaml", toy_language_model_recipe(directory))
    torch.manual_seed(0)
    Trainer(load_recipe(recipe_file), directory / "run").run()
    return directory / "run"
