"""Recipes are validated before any work starts; every problem is one line naming the key path."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from s2s.config import DROPOUT_STEPS, DecoderConfig, dump_recipe, get_data_hint, load_recipe, parse_duration
from s2s.errors import RecipeError
from s2s.modules.dropout import STEPS, Dropout
from tests.helpers import ROOT, TINY, toy_language_model_recipe, write_recipe


def with_change(path: str, value) -> dict:
    tree = {k: (v.copy() if isinstance(v, dict) else v) for k, v in TINY.items()}
    node = tree
    keys = path.split(".")
    for key in keys[:-1]:
        node[key] = dict(node.get(key, {}))
        node = node[key]
    node[keys[-1]] = value
    return tree


def test_setting_a_cell_without_forget_gates_leaves_the_recipes_forget_bias_out_and_says_so():
    notes = []
    recipe = load_recipe(ROOT / "recipes" / "delayed-recall.yaml", ["model.encoder.cell=gru"], notes=notes)
    assert (recipe.model.encoder.cell, recipe.model.encoder.forget_bias) == ("gru", None)
    assert (recipe.model.decoder.cell, recipe.model.decoder.forget_bias) == ("lstm", 1.0)  # untouched
    assert notes == ["--set model.encoder.cell=gru: the recipe's model.encoder.forget_bias (LSTM only) is left out"]
    kept = load_recipe(ROOT / "recipes" / "delayed-recall.yaml", ["model.encoder.cell=lstm"], notes=notes)
    assert kept.model.encoder.forget_bias == 6.0 and len(notes) == 1


def test_a_forget_bias_given_with_another_cell_on_the_command_line_is_still_refused():
    both = ["model.encoder.cell=rnn", "model.encoder.forget_bias=2.0"]
    with pytest.raises(RecipeError, match="model.encoder.forget_bias: applies to an LSTM's forget gates"):
        load_recipe(ROOT / "recipes" / "delayed-recall.yaml", both)


def test_a_language_models_cell_leaves_its_forget_bias_out_too(tmp_path):
    tree = toy_language_model_recipe(tmp_path)
    tree["model"].update(cell="lstm", forget_bias=1.0)
    notes = []
    recipe = load_recipe(write_recipe(tmp_path / "lm.yaml", tree), ["model.cell=gru"], notes=notes)
    assert (recipe.model.cell, recipe.model.forget_bias) == ("gru", None)
    assert notes == ["--set model.cell=gru: the recipe's model.forget_bias (LSTM only) is left out"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("model.encoder.cell", "lstmm", "model.encoder.cell: 'lstmm' is not one of: gru, lstm, rnn"),
        (
            "model.decoder.attention",
            "dot",
            "model.decoder.attention: 'dot' is not one of: none, bahdanau, luong_dot, luong_general",
        ),
        ("model.encoder.layers", 0, "model.encoder.layers: input should be greater than 0 (got 0)"),
        (
            "model.encoder.forget_bias",
            1.0,
            "model.encoder.forget_bias: applies to an LSTM's forget gates, and this cell is gru",
        ),
        (
            "model.decoder.forget_bias",
            1.0,
            "model.decoder.forget_bias: applies to an LSTM's forget gates, and this cell is gru",
        ),
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


def test_a_format_takes_its_own_split_keys_and_no_other(tmp_path):
    tree = with_change("data", {"format": "tsv", "train": {"src": "a"}, "valid": {"path": "b"}})
    recipe = write_recipe(tmp_path / "r.yaml", tree)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    message = "data.train.src: does not apply to data.format 'tsv' (it takes path) (and 1 more problem)"
    assert str(caught.value) == f"{recipe}: {message}"


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


def test_null_leaves_an_optional_section_out_and_is_refused_for_a_required_one():
    flickr8k = ROOT / "recipes" / "captioning-flickr8k.yaml"
    assert load_recipe(flickr8k, check_files=False).self_critical is not None
    assert load_recipe(flickr8k, ["self_critical=null"], check_files=False).self_critical is None
    with pytest.raises(
        RecipeError, match=r"captioning-flickr8k.yaml: data: input should be a section of keys \(got None\)"
    ):
        load_recipe(flickr8k, ["data=null"], check_files=False)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("25m", 1500), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_defaults_live_in_the_config_types(tiny_recipe_file):
    recipe = load_recipe(tiny_recipe_file)
    assert recipe.model.decoder.conditioning == "init"
    assert recipe.train.optimizer == "adam"


def test_shipped_recipes_validate():

    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        load_recipe(path, check_files=False)


def test_a_saved_recipe_reads_back_the_same(tmp_path):
    """A run keeps its resolved recipe (every default written out): it must load again, as it was."""

    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipe = load_recipe(path, check_files=False)
        dump_recipe(recipe, tmp_path / "saved.yaml")
        assert load_recipe(tmp_path / "saved.yaml", check_files=False) == recipe, path


def test_sections_refuse_contradicting_keys_when_built_in_python_too():
    with pytest.raises(ValidationError, match="needs attention; set it to false when attention is 'none'"):
        DecoderConfig(attention="none")


def test_the_smallest_dropout_a_recipe_may_ask_for_is_one_the_module_applies(tmp_path):
    assert DROPOUT_STEPS == STEPS
    for rate, applied in ((1 / 512, False), (0.0019, False), (0.002, True), (0.0, True)):
        tree = with_change("model.encoder.dropout", rate)
        if applied:
            load_recipe(write_recipe(tmp_path / "r.yaml", tree))
            Dropout(rate)
        else:
            with pytest.raises(RecipeError, match=f"model.encoder.dropout: {rate} would drop nothing"):
                load_recipe(write_recipe(tmp_path / "r.yaml", tree))
            with pytest.raises(ValueError, match="would drop nothing"):
                Dropout(rate)


def test_a_missing_file_of_a_known_data_set_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hint = "; fill it with: python tools/get_data.py sst2"
    assert get_data_hint("data/sst2/train.tsv") == hint
    assert get_data_hint(str(tmp_path / "data" / "sst2" / "train.tsv")) == hint
    assert get_data_hint("data/mine/train.tsv") == ""
    assert get_data_hint("elsewhere/data/sst2/train.tsv") == ""
    assert get_data_hint("/somewhere/else/data/sst2/train.tsv") == ""
