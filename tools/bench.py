#!/usr/bin/env python3
"""Benchmark any recipe: training speed, padding, peak memory and inference speed, one row per precision.

    python tools/bench.py recipes/translation.yaml --steps 20 --decode-sentences 50
    python tools/bench.py recipes/sentiment.yaml --precision bf16 --json
    python tools/bench.py --run runs/translation --decode-sentences 200

Everything goes through the recipe's pipeline (``s2s.pipelines.pipeline_for``), so every problem shape is measured
the same way. Training: the data and the assets (tokenizer, labels) are prepared as the trainer does, in a temporary
run directory (without a classifier's ``pretrain`` step: it sets the starting weights, not the speed), a fresh
model is built, and ``--warmup`` + ``--steps`` batches go through ``Trainer.train_step`` in
the trainer's own batch order. The figures are medians over the timed steps of tokens / step seconds (the tokens
the trainer counts: target tokens for sequence outputs, tokens read for classification) and of examples / step
seconds, a step being collate, copy to the device and ``train_step``; padding is the share of PAD positions in the
batches' token tensors (source and target; images have none).

Inference: items per second (sentences, captions or texts: the pipeline's ``UNIT``) of the pipeline's predictor on
the first ``--decode-sentences`` examples of the valid split, with greedy search and with beam 5 where the shape
searches, in one pass where it does not. An untrained model rarely emits EOS, so its outputs run to the length limit
and the figure understates a trained model's speed: give ``--run RUN_DIR`` to decode with a trained run's weights and
assets (its recipe is then the benchmarked one). ``decode_*_mean_length`` in the JSON is the mean output length.

FLOPs: the floating-point operations of one more training step, counted by ``torch.utils.flop_counter`` (matrix
products, forward and backward, as executed), per counted token of that step. That step runs the Python loops: the
compiled kernels' products are the same ones, but the counter cannot see them. Times the measured tokens/s, that is
the achieved FLOP/s, reported as a fraction (``mfu``) of the device's matrix product peak in the same dtype,
measured in the same run on square products (2048 on the CPU, 8192 on CUDA).

Loops: whether the compiled CPU kernels (``s2s/kernels``) were in use (column "loops", JSON ``cpu_kernels``) or
everything ran as PyTorch operations from Python. ``S2S_KERNELS=off`` in the environment measures the latter.

Memory: peak RSS is the process's high-water mark (``getrusage``) when the row ends, so a row also includes
the peaks of the rows before it; on CUDA, ``torch.cuda.max_memory_allocated`` is reset for each row.

With ``--json`` stdout is one line, one JSON object: the first precision's figures plus ``rows`` (one object per
precision); the table then goes to stderr. Errors in the input (recipe, run directory, data) print one line and
exit 1 or 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from s2s import kernels
from s2s.config import Recipe, TrainConfig, load_recipe
from s2s.errors import DataError, S2SError, UsageError
from s2s.models import autocast_dtype, bf16_fallback, count_parameters
from s2s.pipelines import Examples, Pipeline, pipeline_for
from s2s.runs import Run, load_run
from s2s.tokenizer import PAD
from s2s.train import (
    Events,
    Progress,
    Trainer,
    epoch_batches,
    make_optimizer,
    resolve_device,
)

PRECISIONS = ("fp32", "bf16", "fp16")
DECODE_WARMUP = 4
BEAMS = {"greedy": 1, "beam5": 5}


class Bench:
    """One benchmark: the recipe, its pipeline, the device, and (with ``--run``) a trained run."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run: Run | None = load_run(args.run, args.checkpoint, task=None) if args.run else None
        recipe_file = self.run.path / "recipe.yaml" if self.run else Path(args.recipe)
        self.recipe: Recipe = load_recipe(recipe_file, args.set or [])
        if getattr(self.recipe, "pretrain", None) is not None:  # a classifier's: it sets the weights, not the speed
            self.recipe = self.recipe.model_copy(update={"pretrain": None})
            say("the recipe's pretrain step is skipped: it changes the starting weights, not a step's speed")
        self.pipeline: Pipeline = pipeline_for(self.recipe)
        self.device = resolve_device(self.recipe.train.device)
        self.precisions = args.precision or default_precisions(self.device)
        for precision in self.precisions:  # fail before any work: fp16 needs CUDA, bf16 a device that has it
            autocast_dtype(precision, self.device)
            if precision == "bf16" and (why := bf16_fallback(self.device)):
                raise UsageError(f"--precision bf16: {why}; measure fp32")

    def measure(self) -> list[dict]:
        if self.recipe.train.threads:
            torch.set_num_threads(self.recipe.train.threads)
        with tempfile.TemporaryDirectory(prefix="s2s-bench-") as scratch:
            work = Path(scratch) / "run"
            work.mkdir()
            say(f"preparing data for {self.recipe.name!r}")
            events = StderrEvents()
            splits = self.pipeline.read_splits(events)
            if self.run is not None:  # the run's own assets; the run stays untouched
                assets = self.pipeline.load_assets(self.run.path)
            else:
                assets = self.pipeline.prepare_assets(work, splits, events)
            train, valid = self.pipeline.examples(assets, splits, events)
            if not len(train):
                raise DataError("no training examples are left after filtering; nothing to benchmark")
            rows = []
            for precision in self.precisions:
                rows.append(self.row(precision, assets, train, valid, work))
                gc.collect()
        return rows

    def row(self, precision: str, assets, train: Examples, valid: Examples, work: Path) -> dict:
        recipe = self.recipe.model_copy(deep=True)
        recipe.train.precision = precision
        trainer = Trainer(recipe, work)  # resolves device and autocast dtype exactly as a training run does
        cuda = trainer.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        torch.manual_seed(recipe.train.seed)
        model = self.pipeline.build_model(assets).to(trainer.device)
        optimizer = make_optimizer(model, recipe.train)
        scaler = torch.amp.GradScaler(trainer.device.type, enabled=trainer.dtype == torch.float16)
        say(
            f"{precision}: {count_parameters(model):,} parameters on {trainer.device}; "
            f"training {self.args.warmup} + {self.args.steps} steps"
        )
        # what ran the recurrent loops and the loss: the compiled CPU kernels, or PyTorch operations from Python
        compiled = kernels.usable(torch.empty(0, device=trainer.device), torch.float32, trainer.dtype or torch.float32)
        result = {"task": recipe.task, "device": str(trainer.device), "dtype": precision, "cpu_kernels": compiled}
        result.update(train_speed(trainer, model, optimizer, scaler, train, self.args.warmup, self.args.steps))
        result.update(efficiency(trainer, model, optimizer, scaler, train, result["train_tokens_per_s"]))
        if self.run is not None:
            model = self.run.predictor.model.to(trainer.device)
        predictor = self.pipeline.predictor(model, assets, trainer.device, trainer.dtype)
        result["decode_unit"] = self.pipeline.UNIT
        result["decode_model"] = (
            str(self.run.path) if self.run else f"fresh, {self.args.warmup + self.args.steps} steps"
        )
        result.update(self.inference(predictor, valid, precision))
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(trainer.device) / 2**20, 1) if cuda else None
        return result

    def inference(self, predictor, valid: Examples, precision: str) -> dict:
        """Items per second of the predictor on the valid split: greedy and beam 5 where the shape searches."""
        settings = BEAMS if "beam" in self.pipeline.EVAL_OPTIONS else {"greedy": None}
        count = len(valid) if self.args.decode_sentences is None else min(len(valid), self.args.decode_sentences)
        figures = {}
        for name, beam in settings.items():
            say(f"{precision}: {self.pipeline.UNIT} of {count} valid examples, {name}")
            measured = decode_speed(self.pipeline, predictor, valid, count, beam, warm=self.args.warmup > 0)
            figures.update({f"decode_{name}_{key}": value for key, value in measured.items()})
        return figures


def train_speed(trainer: Trainer, model, optimizer, scaler, train: Examples, warmup: int, steps: int) -> dict:
    """Time ``warmup`` + ``steps`` training steps; figures over the timed ones."""
    device, progress = trainer.device, Progress()
    rates, example_rates, seconds_per_step, losses = [], [], [], []
    padded = positions = tokens_total = 0
    for n, indices in enumerate(itertools.islice(training_batches(trainer.config, train), warmup + steps)):
        synchronize(device)
        started = time.perf_counter()
        batch = train.batch(indices)
        loss, tokens, _ = trainer.train_step(model, optimizer, scaler, batch.to(device), progress)
        synchronize(device)
        seconds = time.perf_counter() - started
        progress.step += 1
        progress.batch_in_epoch += 1
        if n < warmup:
            continue
        rates.append(tokens / max(seconds, 1e-9))
        example_rates.append(len(indices) / max(seconds, 1e-9))
        seconds_per_step.append(seconds)
        losses.append(loss)
        tokens_total += tokens
        padding, size = padding_of(batch)
        padded, positions = padded + padding, positions + size
    mean_loss = statistics.fmean(losses)
    return {
        "train_tokens_per_s": round(statistics.median(rates), 1),
        "train_examples_per_s": round(statistics.median(example_rates), 1),
        "train_step_ms": round(1000 * statistics.median(seconds_per_step), 2),
        "train_steps": len(rates),
        "train_tokens": tokens_total,
        "train_loss": round(mean_loss, 4) if math.isfinite(mean_loss) else None,  # fp16 may overflow
        "padding_fraction": round(padded / max(1, positions), 4),
    }


def padding_of(batch) -> tuple[int, int]:
    """PAD positions and all positions of a batch's token tensors (a shared layout counted once: tgt_out)."""
    padded = positions = 0
    for name in ("src", "tgt_out"):
        tensor = getattr(batch, name, None)
        if tensor is not None and not tensor.is_floating_point():
            padded, positions = padded + int(tensor.eq(PAD).sum()), positions + tensor.numel()
    return padded, positions


def efficiency(trainer: Trainer, model, optimizer, scaler, train: Examples, tokens_per_s: float) -> dict:
    """FLOPs per counted token of one training step, the FLOP/s that makes at the measured speed, and that as a
    fraction of the device's matrix-product peak in the step's dtype."""
    # One more (counted) training step, after the timed ones: the model decoded afterwards has had one more update,
    # which changes nothing the decoding figures measure.
    indices = next(iter(training_batches(trainer.config, train)))
    batch = train.batch(indices)
    with kernels.disabled(), unfused_rnns(), FlopCounterMode(display=False) as counter:
        trainer.train_step(model, optimizer, scaler, batch.to(trainer.device), Progress())
    per_token = counter.get_total_flops() / max(1, batch.n_tokens)
    peak = matmul_peak(trainer.device, trainer.dtype or torch.float32)
    achieved = per_token * tokens_per_s
    return {
        "flops_per_token": round(per_token),
        "achieved_gflops": round(achieved / 1e9, 1),
        "peak_gflops": round(peak / 1e9, 1),
        "mfu": round(achieved / peak, 4),
    }


@contextlib.contextmanager
def unfused_rnns():
    """PyTorch's own RNN layers (nn.LSTM) as matrix products the FLOP counter sees: their fused oneDNN and cuDNN
    paths are operators it does not count, so an LSTM layer would count as no work at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oneDNN's flags warn about an Intel-GPU setting they do not apply here
        with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(enabled=False):
            yield


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of large square matrix products in ``dtype`` on ``device``: the best of a few timed runs."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = math.inf
    for _ in range(4):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(3):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - started) / 3)
    return 2 * size**3 / best


def training_batches(config: TrainConfig, train: Examples) -> Iterator[list[int]]:
    """The example indices of each batch in the order ``Trainer.run`` draws them, epoch after epoch."""
    for epoch in itertools.count():
        yield from epoch_batches(config, train, epoch)


def decode_speed(pipeline: Pipeline, predictor, valid: Examples, count: int, beam: int | None, warm: bool) -> dict:
    """Items/second over the first ``count`` valid examples, and the mean output length where outputs are
    token sequences."""
    if not count:
        return {"per_s": None, "seconds": None, "mean_length": None}
    if warm:
        pipeline.predict(predictor, valid, min(count, DECODE_WARMUP), beam)
    synchronize(predictor.device)
    started = time.perf_counter()
    outputs = pipeline.predict(predictor, valid, count, beam)
    synchronize(predictor.device)
    seconds = time.perf_counter() - started
    searched = [options[0] for options in outputs if isinstance(options, list) and hasattr(options[0], "hypothesis")]
    lengths = [len(best.hypothesis.tokens) for best in searched]
    return {
        "per_s": round(count / max(seconds, 1e-9), 2),
        "seconds": round(seconds, 3),
        "mean_length": round(statistics.fmean(lengths), 1) if lengths else None,
    }


def default_precisions(device: torch.device) -> list[str]:
    if device.type != "cuda":
        return ["fp32"] if bf16_fallback(device) else ["fp32", "bf16"]
    return ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class StderrEvents(Events):
    def message(self, text: str) -> None:
        say(text)


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- output


def summary(rows: list[dict]) -> dict:
    return {**rows[0], "rows": rows}


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    cuda = any(row["cuda_peak_mb"] is not None for row in rows)
    first = rows[0]
    table = Table(
        title=f"{args.label}: {first['train_steps']} timed steps after {args.warmup} warm-up; "
        f"{first['decode_unit']} of the valid split ({first['decode_model']} model)"
    )
    for header in (
        "device",
        "dtype",
        "loops",
        "train tok/s",
        "GFLOP/tok",
        "GFLOP/s",
        "MFU",
        "padding",
        "peak RSS MB",
        *(["peak CUDA MB"] if cuda else []),
        "ex/s",
        f"greedy {first['decode_unit']}/s",
        f"beam5 {first['decode_unit']}/s",
    ):
        table.add_column(header, justify="left" if header in ("device", "dtype", "loops") else "right")
    for row in rows:
        table.add_row(
            row["device"],
            row["dtype"],
            "kernels" if row["cpu_kernels"] else "python",
            f"{row['train_tokens_per_s']:,.0f}",
            f"{row['flops_per_token'] / 1e9:.4f}",
            f"{row['achieved_gflops']:,.0f} of {row['peak_gflops']:,.0f}",
            f"{100 * row['mfu']:.1f}%",
            f"{100 * row['padding_fraction']:.1f}%",
            f"{row['peak_rss_mb']:,.0f}",
            *([f"{row['cuda_peak_mb']:,.0f}"] if cuda else []),
            number(row["train_examples_per_s"]),
            number(row["decode_greedy_per_s"]),
            number(row.get("decode_beam5_per_s")),
        )
    Console(width=max(160, Console().width), stderr=args.json).print(table)  # with --json, stdout is the JSON


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


# ---------------------------------------------------------------- command line


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2: like every other error of this tool
        print(f"bench: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="tools/bench.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", nargs="?", help="YAML recipe (leave out with --run)")
    parser.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="a trained run: its weights and tokenizer decode, its recipe is benchmarked",
    )
    parser.add_argument(
        "--checkpoint",
        default="best",
        choices=("best", "last"),
        help="with --run: which weights, best or last",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set train.batch_size=32 (repeatable)",
    )
    parser.add_argument("--steps", type=positive, default=100, help="timed training steps (default 100)")
    parser.add_argument(
        "--warmup",
        type=non_negative,
        default=30,
        help="untimed training steps first (default 30: on the CPU, oneDNN compiles bf16 kernels for each new shape)",
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        action="extend",
        help="one row each (default: fp32 bf16 on the CPU; fp32 bf16 fp16 on CUDA)",
    )
    parser.add_argument(
        "--decode-sentences",
        type=non_negative,
        metavar="N",
        help="run inference on the first N examples of the valid split (default all; 0: skip it)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (the table goes to stderr)"
    )
    args = parser.parse_args(argv)
    if (args.recipe is None) == (args.run is None):
        parser.error("give a RECIPE or --run RUN_DIR (not both)")
    if args.precision:
        args.precision = list(dict.fromkeys(args.precision))
    args.label = args.recipe or args.run
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Trainer.train_step calls float() on a loss that requires grad; torch warns about it on every run
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
    try:
        rows = Bench(args).measure()
    except S2SError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # a file the user named cannot be read or written
        where = f"{error.filename}: " if error.filename else ""
        print(f"bench: error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    first = rows[0]
    if args.run is None and first["decode_greedy_mean_length"] is not None:
        say(
            f"note: decoding used a barely trained model (mean greedy output length "
            f"{first['decode_greedy_mean_length']} tokens), so its figures say little about a trained one: "
            "train first and pass --run RUN_DIR"
        )
    print_table(rows, args)
    if args.json:
        print(json.dumps(summary(rows)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
