#!/usr/bin/env python3
"""Train the recipes behind the classic claims about recurrent networks and print each table of docs/classics.md.

    python tools/classic_claims.py lags       # plain RNN / GRU / LSTM on delayed recall at lags 5, 20 and 100
    python tools/classic_claims.py tasks      # copy / reverse / sort / recall, tested on lengths never trained on
    python tools/classic_claims.py reversal   # Multi30k without attention: source reversed × decoder conditioning

Run it from the repository root (the recipes read data/). Each configuration trains with ``s2s train`` (the recipe
and its ``--set`` overrides, printed before it starts) into ``RUNS/<table>/<name>`` and is scored with ``s2s
evaluate``. A finished run already there with the same resolved recipe is reused, so a second call prints the table
again without training; one of other settings is an error unless ``--retrain``, which trains again. Every run has a
step budget, so a slower or busier machine trains the same models, only later. ``--seeds 1 2 3`` trains each
configuration with each ``train.seed`` and reports the mean and range.

The lags table adds what explains its results: how much of the loss gradient at the end of the input reaches the
first letter, ``lag`` + letters steps back (``gradient_reach``), for the untrained network and the trained one, and
the mean gradient norm over training with the share of steps where clipping scaled it down (from the run's log).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.checkpoint import load_weights
from s2s.config import load_recipe
from s2s.data.corpus import load_split
from s2s.errors import S2SError
from s2s.pipelines import EvalSource, pipeline_for
from s2s.pipelines.translation import encode
from s2s.runs import load_run

RECALL = "recipes/delayed-recall.yaml"
ALGORITHMIC = "recipes/algorithmic.yaml"
SUTSKEVER = "recipes/translation-sutskever.yaml"
LAG_CELLS = ["rnn", "gru", "lstm-fb1", "lstm-fb6"]  # lstm-fb6: the recipe's LSTM with its forget-gate bias of 6.0
TASK_CELLS = ["rnn", "gru", "lstm"]
TASKS = ("copy", "reverse", "sort", "recall")


@dataclass(frozen=True)
class Config:
    """One trained configuration: its run's name, the recipe and the ``--set`` overrides that make it."""

    name: str
    recipe: str
    overrides: tuple[str, ...]


def cell_overrides(cell: str) -> tuple[str, ...]:
    """A cell on both sides (which leaves the recipe's LSTM-only forget_bias out for the others); 1.0 on both sides
    for ``lstm-fb1``, the recipe's own for ``lstm-fb6`` (6.0 in the encoder, 1.0 in the decoder)."""
    if cell == "lstm-fb6":
        return ()
    if cell == "lstm-fb1":
        return ("model.encoder.forget_bias=1.0", "model.decoder.forget_bias=1.0")
    return (f"model.encoder.cell={cell}", f"model.decoder.cell={cell}")


def lag_configs(cells: list[str], lags: list[int]) -> list[Config]:
    return [
        Config(f"{cell}-lag{lag}", RECALL, (*cell_overrides(cell), f"data.generator.lag={lag}"))
        for lag in lags
        for cell in cells
    ]


def task_configs(tasks: list[str], cells: list[str]) -> list[Config]:
    """recall counts pairs and needs a distinct key for each: 1-10 pairs in training, 11-20 in test."""
    configs = []
    for task in tasks:
        settings = [f"data.generator.task={task}"]
        if task == "recall":
            settings += [
                "data.generator.symbols=20",
                "data.generator.train_lengths=[1, 10]",
                "data.generator.test_lengths=[11, 20]",
            ]
        for cell in cells:
            overrides = (f"model.encoder.cell={cell}", f"model.decoder.cell={cell}")
            configs.append(Config(f"{task}-{cell}", ALGORITHMIC, (*settings, *overrides)))
    return configs


def reversal_configs(steps: int) -> list[Config]:
    budget = ("train.max_time=null", f"train.max_steps={steps}")
    return [
        Config(
            f"{'reversed' if reverse else 'forward'}-{conditioning}",
            SUTSKEVER,
            (f"model.encoder.reverse_source={str(reverse).lower()}", f"model.decoder.conditioning={conditioning}")
            + budget,
        )
        for conditioning in ("init", "every_step")
        for reverse in (True, False)
    ]


# ---------------------------------------------------------------- training and scoring


def resolved(recipe: str | Path, overrides: tuple[str, ...] = ()) -> dict:
    """A recipe as the trainer saves it, without where it ran."""
    tree = load_recipe(recipe, list(overrides), check_files=False).model_dump(mode="json")
    tree.pop("run_dir", None)
    return tree


def finished(run: Path) -> bool:
    log = run / "log.jsonl"
    return log.is_file() and any(json.loads(line).get("event") == "end" for line in log.open())


def train(config: Config, run: Path, retrain: bool) -> None:
    """Train ``config`` into ``run``, unless a finished training of it is there (``retrain``: train again). A
    finished run of other settings is never replaced without ``retrain``."""
    if finished(run) and not retrain:
        if resolved(run / "recipe.yaml") != resolved(config.recipe, config.overrides):
            raise S2SError(
                f"{run}: a finished run of other settings; --retrain replaces it, --runs puts runs elsewhere"
            )
        print(f"reusing {run}", file=sys.stderr)
        return
    command = [sys.executable, "-m", "s2s", "train", config.recipe, "--run-dir", str(run), "--overwrite"]
    command += [part for override in config.overrides for part in ("--set", override)]
    print(" ".join(["s2s", *command[3:]]), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=sys.stderr)  # the table alone goes to stdout


def evaluate(run: Path, split: str) -> dict:
    """``s2s evaluate RUN --split SPLIT --json``'s scores, computed in this process (the table's runs share it)."""
    loaded = load_run(run, task=None)
    return loaded.pipeline.evaluate(loaded.predictor, EvalSource(split, {}), {}, run / "eval").scores


def training_record(run: Path) -> dict:
    """From the run's log: steps, minutes, the mean gradient norm before clipping and the share of clipped steps."""
    events = [json.loads(line) for line in (run / "log.jsonl").open()]
    steps = [event for event in events if event.get("event") == "train" and "grad_norm" in event]
    end = next(event for event in events if event.get("event") == "end")
    return {
        "steps": end["steps"],
        "minutes": end["seconds"] / 60,
        "grad_norm": statistics.fmean(event["grad_norm"] for event in steps) if steps else float("nan"),
        "clipped": statistics.fmean(event["clipped"] for event in steps) if steps else float("nan"),
    }


def gradient_reach(run: Path, examples: int = 256) -> tuple[float, float]:
    """The median over valid examples of |∂loss/∂x_first| / |∂loss/∂x_last|, x the embedded input steps: how much of
    the gradient at the end of the input reaches its first step; for the network as the run's seed initialised it,
    and for its best checkpoint. The run, its data and the batch are read once for both."""
    recipe = load_recipe(run / "recipe.yaml", check_files=False)
    pipeline = pipeline_for(recipe)
    tokenizers = pipeline.load_assets(run)
    valid = encode(tokenizers, load_split(recipe.data, "valid")[:examples])
    batch = valid.batch(list(range(len(valid))))
    torch.manual_seed(recipe.train.seed)
    model = pipeline.build_model(tokenizers).eval()
    untrained = median_reach(model, batch)
    load_weights(model, run / "best.safetensors")
    return untrained, median_reach(model, batch)


def median_reach(model: torch.nn.Module, batch) -> float:
    captured = []
    hook = model.encoder.embed.register_forward_hook(lambda module, inputs, output: captured.append(output))
    with torch.enable_grad():
        loss = model(batch)
        (grad,) = torch.autograd.grad(loss, captured[0])  # [B, S, E]
    hook.remove()
    norms = grad.norm(dim=-1)
    last = batch.src_lengths.to(torch.long) - 1
    ratios = norms[:, 0] / norms[torch.arange(len(last)), last].clamp(min=1e-45)
    return ratios.median().item()


# ---------------------------------------------------------------- tables

Cell = str | tuple[float, str]  # a label, or a figure with its format spec


def seeded(config: Config, seed: int) -> Config:
    """``config`` with ``train.seed``; seed 1's run keeps the plain name."""
    name = config.name if seed == 1 else f"{config.name}-seed{seed}"
    return Config(name, config.recipe, (*config.overrides, f"train.seed={seed}"))


def table(configs: list[Config], runs: Path, retrain: bool, seeds: list[int], header: list[str], row) -> list[str]:
    """A Markdown table: each configuration trained with each seed (or its finished runs reused), and one line per
    configuration of ``row(config, run)``'s cells: figures as the mean over seeds and their range."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in configs:
        rows = []
        for seed in seeds:
            run = runs / seeded(config, seed).name
            train(seeded(config, seed), run, retrain)
            rows.append(row(config, run))
        lines.append("| " + " | ".join(over_seeds(cells) for cells in zip(*rows, strict=True)) + " |")
    return lines


def over_seeds(cells: tuple[Cell, ...]) -> str:
    if isinstance(cells[0], str):
        return cells[0]
    values, spec = [value for value, _ in cells], cells[0][1]
    mean = format(statistics.fmean(values), spec)
    low, high = format(min(values), spec), format(max(values), spec)
    return mean if low == high else f"{mean} ({low}–{high})"


LAGS_HEADER = [
    "cell",
    "lag",
    "test exact match",
    "test token accuracy",
    "gradient reach, untrained",
    "trained",
    "mean gradient norm",
    "clipped steps",
    "steps",
    "minutes",
]


def lags_row(config: Config, run: Path) -> list[Cell]:
    scores, record = evaluate(run, "test"), training_record(run)
    cell, lag = config.name.rsplit("-lag", 1)
    return [
        cell,
        lag,
        (scores["exact_match"], ".1f"),
        (scores["token_accuracy"], ".1f"),
        *((reach, ".2g") for reach in gradient_reach(run)),
        (record["grad_norm"], ".3g"),
        (record["clipped"], ".0%"),
        (record["steps"], ",.0f"),
        (record["minutes"], ".1f"),
    ]


TASKS_HEADER = [
    "task",
    "cell",
    "valid exact match (trained lengths)",
    "test exact match (unseen lengths)",
    "test token accuracy",
    "steps",
    "minutes",
]


def tasks_row(config: Config, run: Path) -> list[Cell]:
    seen, unseen, record = evaluate(run, "valid"), evaluate(run, "test"), training_record(run)
    task, cell = config.name.split("-")
    return [
        task,
        cell,
        (seen["exact_match"], ".1f"),
        (unseen["exact_match"], ".1f"),
        (unseen["token_accuracy"], ".1f"),
        (record["steps"], ",.0f"),
        (record["minutes"], ".1f"),
    ]


BUCKETS = ["1-10", "11-20", ">20"]  # s2s evaluate's source-length buckets, in words
REVERSAL_HEADER = [
    "source read",
    "decoder conditioned",
    "valid BLEU",
    *(f"BLEU, {bucket} words" for bucket in BUCKETS),
    "sentences per bucket",
    "steps",
    "minutes",
]


def reversal_row(config: Config, run: Path) -> list[Cell]:
    scores, record = evaluate(run, "valid"), training_record(run)
    buckets = scores["bleu_by_length"]
    assert [b["words"] for b in buckets] == BUCKETS, buckets
    reading, conditioning = config.name.split("-", 1)
    return [
        reading,
        "at every step" if conditioning == "every_step" else "through its initial state",
        (scores["bleu"], ".2f"),
        *((b["bleu"], ".2f") for b in buckets),
        " / ".join(str(b["sentences"]) for b in buckets),
        (record["steps"], ",.0f"),
        (record["minutes"], ".1f"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", choices=("lags", "tasks", "reversal"))
    parser.add_argument("--runs", type=Path, default=Path("runs/classic"), help="where the runs go (RUNS/TABLE/NAME)")
    parser.add_argument("--cells", nargs="+", help=f"lags: {' '.join(LAG_CELLS)}; tasks: {' '.join(TASK_CELLS)}")
    parser.add_argument("--lags", nargs="+", type=int, default=[5, 20, 100])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--steps", type=int, default=3000, help="reversal: each run's step budget")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="one more override for every run (repeatable)"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[1], help="train.seed of each run; figures: mean (range) over them"
    )
    parser.add_argument("--retrain", action="store_true", help="train again even where a finished run is there")
    args = parser.parse_args(argv)
    cells = {"lags": LAG_CELLS, "tasks": TASK_CELLS}.get(args.table, [])
    if args.cells and not set(args.cells) <= set(cells):
        parser.error(f"--cells for the {args.table} table: choose from {', '.join(cells) or 'none'}")
    if args.table == "lags":
        configs, header, row = lag_configs(args.cells or LAG_CELLS, args.lags), LAGS_HEADER, lags_row
    elif args.table == "tasks":
        configs, header, row = task_configs(args.tasks, args.cells or TASK_CELLS), TASKS_HEADER, tasks_row
    else:
        configs, header, row = reversal_configs(args.steps), REVERSAL_HEADER, reversal_row
    configs = [Config(c.name, c.recipe, (*c.overrides, *args.set)) for c in configs]
    try:
        rows = table(configs, args.runs / args.table, args.retrain, args.seeds, header, row)
    except (S2SError, subprocess.CalledProcessError) as error:
        print(f"classic_claims: {error}", file=sys.stderr)
        return 1
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
