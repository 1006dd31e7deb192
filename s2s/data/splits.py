"""The splits a recipe's ``data`` section names: the one asked for, and valid and test splits held out of the
training data for corpora that come without them (IMDB's train file)."""

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


def holds_out(data, split: str) -> bool:
    """Whether ``split`` is a part of the training rows: valid with ``data.holdout``, test with
    ``data.holdout_test``, and train (what is left) with either."""
    valid, test = getattr(data, "holdout", None), getattr(data, "holdout_test", None)
    return bool({"train": valid or test, "valid": valid, "test": test}.get(split))


def without_holdout(data):
    """``data`` reading its training rows whole (the parts are then taken out with ``holdout_rows``)."""
    return data.model_copy(update={"holdout": None, "holdout_test": None})


def holdout_rows(n_rows: int, data, origin: str) -> dict[str, list[int]]:
    """Row positions of the ``train``, ``valid`` and ``test`` parts: ``data.holdout_test`` rows drawn at random
    (seeded) for test, then ``data.holdout`` of the others for valid, the rest for train; each keeps the file's
    order, so the same file and seed always give the same parts. The valid draw without a test part, and the test
    draw with one, are the same rows for the same seed and size."""
    valid_size, test_size = data.holdout or 0, getattr(data, "holdout_test", None) or 0
    if valid_size + test_size >= n_rows:
        keys = " + ".join(
            f"{key} = {size:,}"
            for key, size in [("data.holdout", valid_size), ("data.holdout_test", test_size)]
            if size
        )
        raise DataError(f"{origin}: {keys} leaves no training rows (the split has {n_rows:,})")
    draw = random.Random(data.holdout_seed)
    test = set(draw.sample(range(n_rows), test_size))
    valid = set(draw.sample([i for i in range(n_rows) if i not in test], valid_size))
    return {
        "train": [i for i in range(n_rows) if i not in test and i not in valid],
        "valid": [i for i in range(n_rows) if i in valid],
        "test": [i for i in range(n_rows) if i in test],
    }
