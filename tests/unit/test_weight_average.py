"""train.ema_decay: validation and the best checkpoint use a moving average of the weights; training does not."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from s2s.checkpoint import load_state
from s2s.config import load_recipe
from s2s.errors import RecipeError
from s2s.train import Trainer
from s2s.weight_average import WeightAverage
from tests.helpers import TINY, write_recipe


def test_the_average_follows_the_weights_with_a_warm_up_then_the_decay():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    average = WeightAverage(layer, decay=0.5)
    expected = torch.zeros(1, 2)
    for update, value in enumerate([1.0, 2.0, 4.0], start=1):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
        decay = min(0.5, (1 + update) / (10 + update))  # 2/11, 3/12, then 0.5 ... here all below 0.5
        expected = decay * expected + (1 - decay) * value
        torch.testing.assert_close(average.average[0], expected)


def test_applied_swaps_the_average_in_and_the_own_weights_back_even_on_an_error():
    layer = nn.Linear(3, 2)
    average = WeightAverage(layer, decay=0.9)
    own = {name: tensor.clone() for name, tensor in layer.state_dict().items()}
    with torch.no_grad():
        for weight in average.average:
            weight.add_(1.0)
    with pytest.raises(RuntimeError), average.applied():
        torch.testing.assert_close(layer.weight, own["weight"] + 1.0)
        raise RuntimeError("validation failed")
    for name, tensor in layer.state_dict().items():
        assert torch.equal(tensor, own[name])


def test_restart_starts_the_average_again_from_the_current_weights():
    layer = nn.Linear(2, 2)
    average = WeightAverage(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.add_(5.0)
    average.update()
    average.restart()
    assert average.updates == 0 and torch.equal(average.average[0], layer.weight)


def test_frozen_parameters_are_not_averaged():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)
    assert len(WeightAverage(model, 0.9).average) == 2  # the second layer's weight and bias


def run_tree(steps: int, **train) -> dict:
    return {**TINY, "train": {**TINY["train"], "max_steps": steps, "validate_every": 10, "ema_decay": 0.9, **train}}


def test_the_best_checkpoint_holds_the_average_and_training_goes_on_with_its_own_weights(tmp_path):
    run = tmp_path / "run"
    Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", run_tree(10))), run).run()
    best, last = load_file(str(run / "best.safetensors")), load_file(str(run / "last.safetensors"))
    saved = load_state(run / "last.state.pt")["weight_average"]
    assert saved["updates"] == 10
    averaged = {name: tensor for name, tensor in saved["average"].items() if name in best}
    assert averaged and all(torch.equal(best[name], tensor) for name, tensor in averaged.items())
    assert any(not torch.equal(best[name], last[name]) for name in averaged)


def test_a_resumed_run_goes_on_with_the_saved_average_as_if_never_stopped(tmp_path):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    Trainer(load_recipe(write_recipe(tmp_path / "w.yaml", run_tree(20))), whole).run()
    Trainer(load_recipe(write_recipe(tmp_path / "h.yaml", run_tree(10))), halves).run()
    Trainer(load_recipe(write_recipe(tmp_path / "h.yaml", run_tree(20))), halves, resume=True).run()
    expected, got = load_file(str(whole / "best.safetensors")), load_file(str(halves / "best.safetensors"))
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor)


def test_ema_decay_must_be_below_one(tmp_path):
    with pytest.raises(RecipeError, match="train.ema_decay"):
        load_recipe(write_recipe(tmp_path / "r.yaml", run_tree(10, ema_decay=1.0)))
