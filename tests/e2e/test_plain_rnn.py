"""The plain (Elman) recurrent cell, ``cell: rnn``, wherever a recipe takes a cell: every shipped recipe with a
recurrent part accepts it, and a short run of every problem shape trains with it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s2s.config import DecoderConfig, EncoderConfig, LanguageModelConfig, load_recipe
from s2s.train import Trainer
from tests.helpers import (
    ROOT,
    SHAPES_RUN,
    TINY,
    toy_language_model_recipe,
    toy_sentiment_recipe,
    toy_tagging_recipe,
    write_recipe,
)


def rnn_overrides(recipe) -> list[str]:
    """``--set`` values that make every recurrent part of ``recipe`` a plain RNN."""
    model = recipe.model
    if isinstance(model, LanguageModelConfig):
        return ["model.cell=rnn"]
    parts = [("encoder", EncoderConfig), ("decoder", DecoderConfig)]
    overrides = []
    for name, kind in parts:
        section = getattr(model, name, None)
        if isinstance(section, kind):
            overrides.append(f"model.{name}.cell=rnn")  # an LSTM's forget_bias in the recipe is left out with it
    return overrides


@pytest.mark.parametrize("recipe_file", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_takes_the_plain_rnn_cell_for_each_recurrent_part(recipe_file):
    overrides = rnn_overrides(load_recipe(recipe_file, check_files=False))
    assert overrides  # every recipe has a recurrent part: an encoder, a decoder or a language model
    recipe = load_recipe(recipe_file, overrides, check_files=False)
    for override in (o for o in overrides if o.endswith("cell=rnn")):
        section = recipe.model
        for key in override.removeprefix("model.").split(".")[:-1]:
            section = getattr(section, key)
        assert section.cell == "rnn"


SHAPES = {
    "translation": lambda directory: TINY,
    "classification": toy_sentiment_recipe,
    "tagging": toy_tagging_recipe,
    "language model": toy_language_model_recipe,
    "captioning": lambda directory: SHAPES_RUN,
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_problem_shape_trains_with_plain_rnn_cells(tmp_path, shape):
    recipe_file = write_recipe(tmp_path / "recipe.yaml", SHAPES[shape](tmp_path))
    short = ["train.max_steps=8", "train.validate_every=8", "train.log_every=4"]
    overrides = rnn_overrides(load_recipe(recipe_file, check_files=False)) + short
    torch.manual_seed(0)
    Trainer(load_recipe(recipe_file, overrides), tmp_path / "run").run()
    records = [json.loads(line) for line in Path(tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in steps] == [4, 8] and all(math.isfinite(r["loss"]) for r in steps)
    assert [r["step"] for r in records if r["event"] == "valid"] == [8]


def test_the_delayed_recall_recipe_trains_from_the_command_line_with_plain_rnn_cells(tmp_path):
    tiny = ["train.max_steps=2", "train.validate_every=2", "data.generator.train_size=64"]
    tiny += ["data.generator.valid_size=4", "data.generator.test_size=4", "data.generator.lag=3"]
    command = [sys.executable, "-m", "s2s", "train", "recipes/delayed-recall.yaml", "--run-dir", tmp_path / "run"]
    command += ["--set", "model.encoder.cell=rnn", "--set", "model.decoder.cell=rnn"]
    command += [part for override in tiny for part in ("--set", override)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "s2s: note: --set model.encoder.cell=rnn: the recipe's model.encoder.forget_bias (LSTM only)" in done.stderr
    saved = load_recipe(tmp_path / "run" / "recipe.yaml", check_files=False).model
    assert (saved.encoder.cell, saved.encoder.forget_bias, saved.decoder.cell, saved.decoder.forget_bias) == (
        "rnn",
        None,
        "rnn",
        None,
    )
