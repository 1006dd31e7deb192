"""tools/classic_claims.py: each table's configurations are the recipes they name, a table is trained and printed
end to end, and a second call reuses the finished runs instead of training again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import classic_claims  # noqa: E402

TOOL = ROOT / "tools" / "classic_claims.py"


def claims(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def recipe_of(config: classic_claims.Config):
    return classic_claims.load_recipe(ROOT / config.recipe, list(config.overrides), check_files=False)


ALL_CONFIGS = {
    "lags": classic_claims.lag_configs(classic_claims.LAG_CELLS, [5, 20, 100]),
    "tasks": classic_claims.task_configs(list(classic_claims.TASKS), classic_claims.TASK_CELLS),
    "reversal": classic_claims.reversal_configs(3000),
}


@pytest.mark.parametrize("table", ALL_CONFIGS)
def test_every_configuration_of_a_table_is_a_valid_recipe_of_its_own(table):
    configs = ALL_CONFIGS[table]
    resolved = [classic_claims.resolved(ROOT / c.recipe, c.overrides) for c in configs]
    assert len({c.name for c in configs}) == len(configs)
    assert all(resolved.count(tree) == 1 for tree in resolved)


def test_the_lags_table_compares_cells_on_both_sides_at_each_lag():
    configs = {c.name: recipe_of(c) for c in ALL_CONFIGS["lags"]}
    rnn, gru = configs["rnn-lag20"].model, configs["gru-lag100"].model
    assert (rnn.encoder.cell, rnn.decoder.cell, rnn.encoder.forget_bias, rnn.decoder.forget_bias) == (
        "rnn",
        "rnn",
        None,
        None,
    )
    assert (gru.encoder.cell, gru.decoder.cell) == ("gru", "gru")
    usual, shipped = configs["lstm-fb1-lag5"].model, configs["lstm-fb6-lag5"].model
    assert (usual.encoder.forget_bias, usual.decoder.forget_bias) == (1.0, 1.0)
    assert (shipped.encoder.cell, shipped.encoder.forget_bias, shipped.decoder.forget_bias) == ("lstm", 6.0, 1.0)
    assert [configs[f"rnn-lag{lag}"].data.generator.lag for lag in (5, 20, 100)] == [5, 20, 100]


def test_the_tasks_table_tests_lengths_outside_training_and_recall_counts_pairs_within_its_keys():
    for config in ALL_CONFIGS["tasks"]:
        generator = recipe_of(config).data.generator
        (low, high), (test_low, _) = generator.train_lengths, generator.test_lengths
        assert test_low > high
        if generator.task == "recall":
            assert (low, high, generator.test_lengths, generator.symbols) == (1, 10, (11, 20), 20)
        else:
            assert (low, high, generator.test_lengths) == (1, 20, (21, 40))


def test_the_reversal_table_crosses_reading_with_conditioning_on_a_step_budget():
    models = {c.name: recipe_of(c) for c in ALL_CONFIGS["reversal"]}
    assert set(models) == {"reversed-init", "forward-init", "reversed-every_step", "forward-every_step"}
    for name, recipe in models.items():
        reading, conditioning = name.split("-", 1)
        assert recipe.model.encoder.reverse_source == (reading == "reversed")
        assert recipe.model.decoder.conditioning == conditioning
        assert (recipe.train.max_steps, recipe.train.max_time) == (3000, None)


def test_figures_over_several_seeds_are_their_mean_and_range_and_labels_stay():
    assert classic_claims.over_seeds(("rnn", "rnn")) == "rnn"
    assert classic_claims.over_seeds(((74.0, ".1f"), (70.5, ".1f"), (72.0, ".1f"))) == "72.2 (70.5–74.0)"
    assert classic_claims.over_seeds(((0.9, ".0%"),)) == "90%"
    assert classic_claims.over_seeds(((2000, ",.0f"), (2000, ",.0f"))) == "2,000"  # the same in every seed


def test_the_lags_table_trains_scores_and_prints_then_reuses_its_runs(tmp_path):
    tiny = [
        "train.max_steps=20",
        "train.validate_every=10",
        "data.generator.train_size=200",
        "data.generator.valid_size=16",
        "data.generator.test_size=16",
    ]
    args = ["lags", "--cells", "rnn", "lstm-fb6", "--lags", "3", "--seeds", "1", "2", "--runs", tmp_path]
    args += [part for override in tiny for part in ("--set", override)]
    first = claims(*args)
    assert first.returncode == 0, first.stderr
    rows = first.stdout.splitlines()
    assert rows[0].startswith("| cell | lag | test exact match |")
    assert [row.split("|")[1:3] for row in rows[2:]] == [[" rnn ", " 3 "], [" lstm-fb6 ", " 3 "]]
    assert all(len(row.split("|")) == len(rows[0].split("|")) for row in rows)
    for name in ("rnn-lag3", "rnn-lag3-seed2", "lstm-fb6-lag3", "lstm-fb6-lag3-seed2"):
        assert (tmp_path / "lags" / name / "best.safetensors").is_file()
    again = claims(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert again.stderr.count("reusing") == 4 and "s2s train" not in again.stderr


def test_a_finished_run_of_other_settings_is_not_replaced_without_retrain(tmp_path):
    tiny = ["--set", "train.max_steps=4", "--set", "train.validate_every=2", "--set", "data.generator.train_size=50"]
    tiny += ["--set", "data.generator.valid_size=4", "--set", "data.generator.test_size=4"]
    args = ["lags", "--cells", "gru", "--lags", "2", "--runs", tmp_path, *tiny]
    assert claims(*args).returncode == 0
    weights = (tmp_path / "lags" / "gru-lag2" / "best.safetensors").read_bytes()
    other = claims(*args, "--set", "train.lr=0.01")
    assert other.returncode == 1
    assert other.stderr.strip().endswith(
        "gru-lag2: a finished run of other settings; --retrain replaces it, --runs puts runs elsewhere"
    )
    assert (tmp_path / "lags" / "gru-lag2" / "best.safetensors").read_bytes() == weights


def test_cells_of_another_table_are_refused_before_anything_trains(tmp_path):
    done = claims("tasks", "--cells", "lstm-fb6", "--runs", tmp_path)
    assert done.returncode == 2
    assert "--cells for the tasks table: choose from rnn, gru, lstm" in done.stderr
    assert not any(tmp_path.iterdir())
