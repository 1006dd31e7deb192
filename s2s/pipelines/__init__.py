"""Pipelines: what differs between the problem shapes s2s trains (translation, classification, captioning), behind the
one interface the trainer and the run loader use.

A pipeline reads its splits, prepares them (tokenizer, labels) in the run directory, builds its model, scores a
model on the valid split, and wraps a trained model for use. Everything else (the training loop, precision,
checkpoints, resume, progress) is shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn

from s2s.config import Recipe


class Examples(Protocol):
    """One prepared split: what the trainer batches."""

    def __len__(self) -> int: ...
    def lengths(self) -> list[int]: ...  # what batching buckets by
    def batch(self, indices: list[int]): ...  # → a batch with .to(device), .n_tokens and .n_predictions
    def iterate(self, batches: list[list[int]]) -> Iterator: ...  # the batches, made in order (maybe in workers)


class Pipeline(Protocol):
    recipe: Recipe

    def read_splits(self) -> tuple: ...
    def prepare(self, run_dir, events, reuse: bool, splits) -> tuple[Examples, Examples]: ...
    def load_assets(self, run_dir) -> None: ...
    def build_model(self) -> nn.Module: ...
    def score(self, model: nn.Module, valid: Examples, device: torch.device, dtype) -> dict: ...
    def predictor(self, model: nn.Module, device: torch.device, dtype=None): ...


def pipeline_for(recipe: Recipe) -> Pipeline:
    from s2s.pipelines.captioning import CaptioningPipeline
    from s2s.pipelines.classification import ClassificationPipeline
    from s2s.pipelines.translation import TranslationPipeline

    pipelines = {
        "translation": TranslationPipeline,
        "classification": ClassificationPipeline,
        "captioning": CaptioningPipeline,
    }
    return pipelines[recipe.task](recipe)
