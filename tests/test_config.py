"""Recipes are validated before any work starts; every problem is one line naming the key path."""

from __future__ import annotations

import pytest

from s2s.config import load_recipe, parse_duration
from s2s.errors import RecipeError
from tests.conftest import TINY, write_recipe


def with_change(path: str, value) -> dict:
    tree = {k: (v.copy() if isinstance(v, dict) else v) for k, v in TINY.items()}
    node = tree
    keys = path.split(".")
    for key in keys[:-1]:
        node[key] = dict(node.get(key, {}))
        node = node[key]
    node[keys[-1]] = value
    return tree


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("model.encoder.cell", "lstmm", "model.encoder.cell: 'lstmm' is not one of: gru, lstm"),
        (
            "model.decoder.attention",
            "dot",
            "model.decoder.attention: 'dot' is not one of: none, bahdanau, luong_dot, luong_general",
        ),
        ("model.encoder.layers", 0, "model.encoder.layers: input should be greater than 0 (got 0)"),
        ("model.encoder.hiden_size", 3, "model.encoder.hiden_size: unknown key; did you mean 'hidden_size'?"),
        ("train.lr", "fast", "train.lr: input should be a valid number, unable to parse string as a number"),
        ("train.max_time", "soon", "train.max_time: 'soon' is not a duration such as 90, 90s, 25m or 1.5h"),
        ("trian", {}, "trian: unknown key; did you mean 'train'?"),
        (
            "data.format",
            "parquet",
            "data.format: 'parquet' is not one of: text, tsv, csv, jsonl, hub, generated",
        ),
    ],
)
def test_a_bad_value_is_reported_with_its_key_path(tmp_path, path, value, message):
    recipe = write_recipe(tmp_path / "r.yaml", with_change(path, value))
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert str(caught.value).startswith(f"{recipe}: {message}")
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_missing_data_file_names_the_key_and_the_file(tmp_path):
    tree = with_change(
        "data",
        {
            "format": "text",
            "train": {"src": "nope.de", "tgt": "nope.en"},
            "valid": {"src": "nope.de", "tgt": "nope.en"},
        },
    )
    recipe = write_recipe(tmp_path / "r.yaml", tree)
    with pytest.raises(RecipeError, match=r"data\.train\.src: file not found: nope\.de$"):
        load_recipe(recipe)


def test_a_format_needs_its_own_split_keys(tmp_path):
    tree = with_change("data", {"format": "tsv", "train": {"src": "a"}, "valid": {"path": "b"}})
    with pytest.raises(RecipeError, match=r"data\.train\.path: required when data\.format is 'tsv'"):
        load_recipe(write_recipe(tmp_path / "r.yaml", tree))


def test_malformed_yaml_names_file_line_and_column(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ntrain: {lr: 1\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:3:1: invalid YAML"):
        load_recipe(recipe)


def test_a_recipe_that_is_not_a_mapping_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="a recipe must be a mapping"):
        load_recipe(recipe)


def test_overrides_set_values_with_the_same_validation(tiny_recipe_file):
    recipe = load_recipe(tiny_recipe_file, ["train.lr=3e-4", "model.encoder.layers=2", "model.encoder.cell=lstm"])
    assert recipe.train.lr == pytest.approx(3e-4)
    assert recipe.model.encoder.layers == 2
    assert recipe.model.encoder.cell == "lstm"
    with pytest.raises(RecipeError, match="train.lr: input should be a valid number"):
        load_recipe(tiny_recipe_file, ["train.lr=abc"])
    with pytest.raises(RecipeError, match="train.lrr: unknown key; did you mean 'lr'"):
        load_recipe(tiny_recipe_file, ["train.lrr=1"])
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        load_recipe(tiny_recipe_file, ["train.lr"])
    with pytest.raises(RecipeError, match="train.lr is a value, not a section"):
        load_recipe(tiny_recipe_file, ["train.lr.x=1"])


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("25m", 1500), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_defaults_live_in_the_config_types(tiny_recipe_file):
    recipe = load_recipe(tiny_recipe_file)
    assert recipe.model.decoder.conditioning == "init"
    assert recipe.train.optimizer == "adam"


def test_shipped_recipes_validate():
    from tests.conftest import ROOT

    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        load_recipe(path, check_files=False)
