"""Pipelines: what differs between the problem shapes s2s trains (translation, classification, captioning), behind
the one interface that the trainer, the run loader, the command line and the benchmark use.

A pipeline owns its whole shape: reading and checking its data, preparing its assets (tokenizers, label sets) in
the run directory, building its model from those assets, scoring a model on the valid split, evaluating a trained
run on a split or on files, and the predictor the commands use. Nothing a pipeline makes is left on ``self`` for a
later call to find: ``prepare_assets`` and ``load_assets`` return the assets, and every later step takes them.
Everything else (the training loop, precision, checkpoints, resume, progress) is shared. ``docs/pipelines.md`` says
what a new problem shape must provide.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from s2s.config import Recipe
from s2s.errors import UsageError


class Examples(Protocol):
    """One prepared split: what the trainer batches."""

    def __len__(self) -> int: ...
    def lengths(self) -> list[int]: ...  # each example's length
    # the batches of an epoch (shuffled by ``rng`` in training; None: in a fixed order); most splits bucket by
    # length (s2s.data.batching.ByLength), streams read their segments in order
    def batches(self, batch_size: int, by_tokens: bool, rng: random.Random | None) -> list[list[int]]: ...
    def batch(self, indices: list[int]): ...  # → a batch with .to(device), .n_tokens and .n_predictions
    def iterate(self, batches: list[list[int]]) -> Iterator: ...  # the batches, made in order (maybe in workers)
    # what reading the split remembers from one batch to the next (a stream's carried state), for the trainer
    # state, so that a resumed run reads on exactly; most splits remember nothing
    def state(self) -> dict: ...
    def restore(self, state: dict) -> None: ...


@dataclass(frozen=True)
class EvalSource:
    """What ``s2s evaluate`` scores: a split of the run's recipe, or files the user names (by option name)."""

    split: str | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """What output files are named after: the split, or the first file given."""
        return self.split or next(iter(self.files.values())).name


@dataclass
class Evaluation:
    """Scores for ``--json``, the report lines a terminal shows, and notes on how it was done (for stderr)."""

    scores: dict[str, Any]
    report: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass
class Stage:
    """A last part of training with an objective of its own (captioning's self-critical stage): it starts once
    ``after_steps`` steps or ``after_time`` seconds of the command have passed, and trains ``examples`` with a
    fresh optimizer at ``lr``, validating every ``validate_every`` steps (its steps may cost far more), through
    ``objective(model)``: a module whose ``forward(batch, label_smoothing)`` is the stage's loss. Checkpoints, the
    kept best weights and the budgets go on as before."""

    name: str
    after_steps: int | None
    after_time: float | None
    lr: float
    batch_size: int
    validate_every: int  # steps
    examples: Examples
    objective: Callable[[nn.Module], nn.Module]

    def due(self, step: int, seconds: float) -> bool:
        """Whether the stage starts now, ``step`` steps and ``seconds`` into the command."""
        return step >= self.after_steps if self.after_steps else seconds >= self.after_time


class Pipeline(Protocol):
    recipe: Recipe
    UNIT: ClassVar[str]  # what inference turns out: sentences, captions, texts
    EVAL_FILES: ClassVar[tuple[str, ...]]  # the file options of ``s2s evaluate`` this shape reads, given together
    EVAL_OPTIONS: ClassVar[tuple[str, ...]]  # the other options of ``s2s evaluate`` that apply (beam, alpha, …)

    def read_splits(self, events) -> tuple: ...  # train and valid, read and checked before anything is written
    def prepare_assets(self, run_dir: Path, splits, events) -> Any: ...  # made from training data, saved in run_dir
    def load_assets(self, run_dir: Path) -> Any: ...  # what prepare_assets saved
    def examples(self, assets, splits, events) -> tuple[Examples, Examples]: ...  # train and valid, prepared
    def build_model(self, assets) -> nn.Module: ...
    def predictor(self, model: nn.Module, assets, device: torch.device, dtype=None): ...
    def predict(self, predictor, valid: Examples, count: int | None, beam_size: int | None) -> Sequence: ...
    # validation scores (keep_best_by picks one), given the mean validation loss the trainer has just computed
    def score(self, predictor, valid: Examples, loss: float) -> dict: ...
    def evaluate(self, predictor, source: EvalSource, options: dict, out: Path) -> Evaluation: ...

    # optional: a last stage of training with an objective of its own (see ``final_stage`` below)
    # def final_stage(self, assets, train: Examples) -> Stage | None: ...


def final_stage(pipeline: Pipeline, assets, train: Examples) -> Stage | None:
    """The recipe's last training stage, from a pipeline that has one (most train with one objective throughout)."""
    make = getattr(pipeline, "final_stage", None)
    return make(assets, train) if make is not None else None


@torch.inference_mode()
def validation_loss(model: nn.Module, examples: Examples, batch_size: int, device, dtype) -> float:
    """Mean cross-entropy per prediction (target token, or text), without label smoothing: what perplexity reads.
    The trainer validates with it; a pipeline may score with it."""
    from s2s.models import autocast

    model.eval()
    total, count = 0.0, 0
    for batch in examples.iterate(examples.batches(batch_size, by_tokens=False, rng=None)):
        batch = batch.to(device)
        with autocast(device, dtype):
            loss = model(batch)
        total += float(loss) * batch.n_predictions
        count += batch.n_predictions
    return total / max(1, count)


PIPELINES = {  # task → the module and class of its pipeline, imported when a recipe of that task is used
    "translation": ("s2s.pipelines.translation", "TranslationPipeline"),
    "classification": ("s2s.pipelines.classification", "ClassificationPipeline"),
    "captioning": ("s2s.pipelines.captioning", "CaptioningPipeline"),
    "tagging": ("s2s.pipelines.tagging", "TaggingPipeline"),
    "language_model": ("s2s.pipelines.language_model", "LanguageModelPipeline"),
}


def pipeline_for(recipe: Recipe) -> Pipeline:
    import importlib

    module, name = PIPELINES[recipe.task]
    return getattr(importlib.import_module(module), name)(recipe)


def check_evaluation(pipeline: Pipeline, task: str, split: str | None, files: dict[str, Path], options: dict) -> None:
    """What ``s2s evaluate`` was given must fit the run's shape: a split or this shape's files (all of them), and
    only the options that apply; each refusal names the option."""
    if (split is None) == (not files):
        raise UsageError(f"--split: give --split valid|test, or {files_wanted(pipeline)} (not both)")
    for name in files:
        if name not in pipeline.EVAL_FILES:
            raise UsageError(f"--{name}: does not apply to a {task} run (it reads {files_wanted(pipeline)})")
    missing = [name for name in pipeline.EVAL_FILES if name not in files]
    if files and missing:
        raise UsageError(f"--{missing[0]}: {files_wanted(pipeline)} go together")
    for name in options:
        if name not in pipeline.EVAL_OPTIONS:
            raise UsageError(f"--{name.replace('_', '-')}: does not apply to a {task} run")


def files_wanted(pipeline: Pipeline) -> str:
    return " with ".join(f"--{name}" for name in pipeline.EVAL_FILES)
