"""Run directories: what the trainer writes, what makes a folder a run, and loading a trained run for use.

recipe.yaml          the resolved recipe: the run can be reproduced from its own folder
log.jsonl            one JSON object per line; the first is the run signature (what ran), which marks the run
tokenizer/           SentencePiece model(s); labels.json for classification
best.safetensors     weights with the best validation score
last.safetensors     weights at the last checkpoint; last.state.pt holds the trainer state
checkpoints/         the newest step checkpoints (for s2s average)
averaged.safetensors the mean of the newest step checkpoints (s2s average, or train.average_last)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import s2s
from s2s.checkpoint import average_checkpoints, load_weights, step_checkpoints
from s2s.config import Recipe, load_recipe
from s2s.errors import RunError
from s2s.pipelines import Pipeline, pipeline_for

SIGNATURE_EVENT = "run"


def is_run(path: str | Path) -> bool:
    """The one definition of an s2s run: a folder with its recipe and a log that starts with a run signature."""
    return not_a_run(Path(path)) is None


def not_a_run(path: Path) -> str | None:
    """Why ``path`` is not an s2s run, or None when it is one."""
    if not (path / "recipe.yaml").is_file():
        return "no recipe.yaml"
    try:
        with open(path / "log.jsonl", encoding="utf-8") as log:
            first = json.loads(log.readline())
    except (OSError, ValueError):
        first = None
    if not (isinstance(first, dict) and first.get("event") == SIGNATURE_EVENT):
        return "its log.jsonl does not start with a run signature"
    return None


def require_run(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, if it is a run directory; otherwise the error a user sees."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    why = not_a_run(run_dir)
    if why is not None:
        raise RunError(f"{run_dir}: not an s2s run ({why})")
    return run_dir


def remove_run(run_dir: str | Path) -> None:
    """Delete a run directory (``s2s train --overwrite``); a folder that is not a run is never deleted."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    require_run(run_dir)
    shutil.rmtree(run_dir)


def run_signature(run_dir: Path, model: nn.Module, device: torch.device, dtype, resumed_at: int) -> dict:
    """What ran: versions, device, threads, loops, precision, model size and the hash of the resolved recipe
    (``run_dir/recipe.yaml``, as the trainer wrote it)."""
    from s2s import kernels
    from s2s.models import count_parameters, precision_name

    recipe = Path(run_dir) / "recipe.yaml"
    return {
        "event": SIGNATURE_EVENT,
        "s2s": s2s.__version__,
        "git_commit": source_commit(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "kernels": kernels.usable(torch.empty(0, device=device), torch.float32, dtype or torch.float32),
        "precision": precision_name(dtype),
        "parameters": count_parameters(model),
        "recipe_sha256": hashlib.sha256(recipe.read_bytes()).hexdigest(),
        "resumed_at": resumed_at,
    }


def source_commit() -> str | None:
    """The git commit of the s2s source tree, with ``+changes`` when it differs from it; None outside git."""
    where = Path(s2s.__file__).resolve().parent
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=5, check=True, env=os.environ
        ).stdout.strip()
        commit, changes = run("rev-parse", "HEAD"), run("status", "--porcelain", "--untracked-files=no", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if changes else "")


class WrongTask(RunError):
    """A run of another kind than the command needs; ``task`` is the run's, so the caller can name its command."""

    def __init__(self, message: str, task: str):
        super().__init__(message)
        self.task = task


@dataclass
class Run:
    """A trained run ready for use: its recipe, its pipeline, what the pipeline prepared, and the predictor."""

    path: Path
    recipe: Recipe
    pipeline: Pipeline
    predictor: object  # a Translator, an ImageCaptioner, a TextClassifier …


def load_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str = "cpu",
    task: str | None = "translation",
    precision: str = "fp32",
) -> Run:
    """A finished or running run, loaded for use. ``task`` is the kind the caller can use (None: any); a run of
    another kind is an error that says which command fits it. ``precision``: fp32, or the autocast dtype (bf16,
    fp16 on CUDA) its predictions run in."""
    from s2s.models import autocast_dtype

    run_dir = require_run(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml", check_files=False)
    if task is not None and recipe.task != task:
        raise WrongTask(f"{run_dir}: is a {recipe.task} run, not a {task} run", recipe.task)
    pipeline = pipeline_for(recipe)
    assets = pipeline.load_assets(run_dir)
    model = pipeline.build_model(assets)
    weights = run_dir / f"{checkpoint}.safetensors"
    if not weights.is_file():
        raise RunError(f"{run_dir}: no {checkpoint} checkpoint ({weights.name}); has training saved one yet?")
    load_weights(model, weights)
    dtype = autocast_dtype(precision, torch.device(device))
    return Run(run_dir, recipe, pipeline, pipeline.predictor(model, assets, torch.device(device), dtype))


def average_run(run_dir: str | Path, last: int) -> list[Path]:
    """Average the newest ``last`` step checkpoints of a run into ``RUN/averaged.safetensors``; return them."""
    run_dir = require_run(run_dir)
    available = step_checkpoints(run_dir)
    if len(available) < last:
        raise RunError(
            f"{run_dir}: {len(available)} step checkpoints in {run_dir / 'checkpoints'}, fewer than --last {last}"
        )
    chosen = available[-last:]
    average_checkpoints(chosen, run_dir / "averaged.safetensors")
    return chosen
