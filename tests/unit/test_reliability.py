"""Runs that survive faults: bad losses are skipped, a checkpoint never runs code; averaging and pruning checkpoints."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from s2s.checkpoint import average_checkpoints, load_state, step_checkpoints
from s2s.config import load_recipe
from s2s.errors import RunError, TrainingError
from s2s.train import Progress, Trainer, make_optimizer
from tests.helpers import TINY, write_recipe


def test_a_checkpoint_crafted_to_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "last.state.pt"
    torch.save({"progress": Payload()}, path)
    with pytest.raises(RunError, match="refused to load trainer state"):
        load_state(path)
    assert not marker.exists()


class DivergedModel(torch.nn.Module):
    """A model whose loss is NaN whenever ``diverged`` is set."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.diverged = True

    def forward(self, batch, label_smoothing=0.0):
        loss = self.weight.sum() * (float("nan") if self.diverged else 1.0)
        return loss


def test_non_finite_losses_skip_the_update_and_too_many_in_a_row_stop_the_run(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", TINY), ["train.max_nonfinite_steps=3"])
    (tmp_path / "run").mkdir()
    trainer = Trainer(recipe, tmp_path / "run")
    model, progress = DivergedModel(), Progress()
    optimizer = make_optimizer(model, recipe.train)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batch = type("B", (), {"n_tokens": 5, "n_predictions": 5, "to": lambda self, device: self})()
    for _ in range(2):
        assert trainer.train_step(model, optimizer, scaler, batch, progress) == (0.0, 0, None)
    assert torch.equal(model.weight.detach(), torch.ones(3))  # no update was made
    model.diverged = False
    step = trainer.train_step(model, optimizer, scaler, batch, progress)
    assert step[:2] == (3.0, 5) and step.grad_norm == pytest.approx(3**0.5)  # the norm before clipping to 1
    assert progress.nonfinite_in_row == 0 and progress.skipped_steps == 2
    model.diverged = True
    for _ in range(2):
        trainer.train_step(model, optimizer, scaler, batch, progress)
    with pytest.raises(TrainingError, match="not finite for 3 steps in a row"):
        trainer.train_step(model, optimizer, scaler, batch, progress)


def test_the_average_of_identical_checkpoints_is_that_checkpoint(tmp_path):
    generator = torch.Generator().manual_seed(0)
    weights = {"w": torch.randn(7, 5, generator=generator), "b": torch.randn(5, generator=generator).bfloat16()}
    paths = [tmp_path / f"step-{k}.safetensors" for k in range(3)]
    for path in paths:
        save_file(weights, str(path))
    average_checkpoints(paths, tmp_path / "averaged.safetensors")
    averaged = load_file(str(tmp_path / "averaged.safetensors"))
    assert averaged.keys() == weights.keys()
    for name, tensor in weights.items():
        assert averaged[name].dtype == tensor.dtype and torch.equal(averaged[name], tensor)


def test_only_the_newest_step_checkpoints_are_kept(tmp_path):
    tree = copy.deepcopy(TINY)
    tree["train"].update(max_steps=12, validate_every=2, keep_last=3)
    Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run").run()
    assert [p.name for p in step_checkpoints(tmp_path / "run")] == [f"step-{s:08d}.safetensors" for s in (8, 10, 12)]
