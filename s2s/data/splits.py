"""The splits a recipe's ``data`` section names: the one asked for, and a valid split held out of the training data
for corpora that come without one (IMDB's train file)."""

from __future__ import annotations

import random

from s2s.errors import DataError


def split_spec(data, split: str):
    """What ``data`` says of ``split`` (train / valid / test): its files or hub split; a ``DataError`` naming the
    key when the recipe has none."""
    spec = getattr(data, split)
    if spec is None:
        raise DataError(f"data.{split}: this recipe has no {split} split")
    return spec


def holdout_rows(n_rows: int, size: int, seed: int, origin: str) -> dict[str, list[int]]:
    """Row positions of the ``train`` and ``valid`` parts: ``size`` rows drawn at random (seeded) for valid,
    the rest for train; both keep the file's order, so the same file and seed always give the same split."""
    if size >= n_rows:
        raise DataError(f"{origin}: data.holdout = {size:,} leaves no training rows (the split has {n_rows:,})")
    held = set(random.Random(seed).sample(range(n_rows), size))
    return {
        "train": [i for i in range(n_rows) if i not in held],
        "valid": [i for i in range(n_rows) if i in held],
    }
