"""Run directories: what the trainer writes, and loading a trained run for use.

recipe.yaml          the resolved recipe: the run can be reproduced from its own folder
tokenizer/           SentencePiece model(s); labels.json for classification
best.safetensors     weights with the best validation score
last.safetensors     weights at the last checkpoint; last.state.pt holds the trainer state
checkpoints/         the newest step checkpoints (for s2s average)
averaged.safetensors the mean of the newest step checkpoints (s2s average, or train.average_last)
log.jsonl            one JSON object per log line / validation
"""

from __future__ import annotations

from pathlib import Path

import torch

from s2s.checkpoint import load_weights
from s2s.config import Recipe, load_recipe
from s2s.errors import RunError
from s2s.pipelines import pipeline_for

# what each command needs, to name it in the error when a run of another kind is given
COMMANDS = {"translation": "s2s translate", "classification": "s2s classify", "captioning": "s2s caption"}


def require_run(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, if it is a run directory; otherwise the error a user sees."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    if not (run_dir / "recipe.yaml").is_file():
        raise RunError(f"{run_dir}: not an s2s run (no recipe.yaml)")
    return run_dir


def load_run(
    run_dir: str | Path, checkpoint: str = "best", device: str = "cpu", task: str | None = "translation"
) -> tuple[Recipe, object]:
    """Recipe and predictor (a Translator, a TextClassifier …) of a finished or running run. ``task`` is the
    kind the caller can use (None: any); a run of another kind is an error that says which command fits it."""
    run_dir = require_run(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml", check_files=False)
    if task is not None and recipe.task != task:
        raise RunError(
            f"{run_dir}: is a {recipe.task} run, not a {task} run; use {COMMANDS.get(recipe.task, 's2s evaluate')}"
        )
    pipeline = pipeline_for(recipe)
    pipeline.load_assets(run_dir)
    model = pipeline.build_model()
    weights = run_dir / f"{checkpoint}.safetensors"
    if not weights.is_file():
        raise RunError(f"{run_dir}: no {checkpoint} checkpoint ({weights.name}); has training saved one yet?")
    load_weights(model, weights)
    return recipe, pipeline.predictor(model, torch.device(device))
