#!/usr/bin/env python3
"""Benchmark a recipe: training speed, padding, peak memory and decoding speed, one row per precision.

    python tools/bench.py recipes/translation.yaml --steps 20 --decode-sentences 50
    python tools/bench.py recipes/quickstart.yaml --set train.batch_size=128 --precision fp32 bf16 --json
    python tools/bench.py --run runs/translation --decode-sentences 200

Training: the data and a tokenizer are prepared as the trainer does (the translation pipeline's ``prepare``, in a
temporary run directory), a fresh model is built, and ``--warmup`` + ``--steps`` batches go through
``Trainer.train_step`` in the trainer's own batch order. The figure is the median over the timed steps of
target tokens / step seconds (a step being collate, copy to the device and ``train_step``, as in the
trainer's own tokens/s); padding is the share of PAD positions in the src and tgt tensors of those batches
(tgt_in and tgt_out share one layout: counted once).

Decoding: sentences/second of ``s2s.inference.Translator`` with greedy search and with beam 5 on the first
``--decode-sentences`` sources of the test split (the valid split when the recipe has none). An untrained
model rarely emits EOS, so its outputs run to the length limit and the figure understates a trained model's
speed: give ``--run RUN_DIR`` to decode with a trained run's weights and tokenizer (its recipe is then the
benchmarked one). ``decode_*_at_limit`` in the JSON says how many outputs ran to the limit.

FLOPs: the floating-point operations of one more training step, counted by ``torch.utils.flop_counter`` (matrix
products, forward and backward, as executed: decoder steps over padding included), per target token of that step.
That step runs the Python loops (``s2s.kernels.disabled``): the compiled kernels' products are the same ones, but the
counter cannot see them.
Times the measured tokens/s, that is the achieved FLOP/s, reported as a fraction (``mfu``) of the device's matrix
product peak in the same dtype, measured in the same run on square products (2048 on the CPU, 8192 on CUDA).

Loops: whether the compiled CPU kernels (``s2s/kernels``: GRU layers, the input-fed GRU decoder, the loss) were in
use (column "loops", JSON ``cpu_kernels``) or everything ran as PyTorch operations from Python; LSTM layers always run
PyTorch's own. ``S2S_KERNELS=off`` in the environment measures the latter.

Memory: peak RSS is the process's high-water mark (``getrusage``) when the row ends, so a row also includes
the peaks of the rows before it; on CUDA, ``torch.cuda.max_memory_allocated`` is reset for each row.

With ``--json`` the last line of stdout is one JSON object: the first precision's figures plus ``rows`` (one
object per precision). Errors in the input (recipe, run directory, data) print one line and exit 1 or 2.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import resource
import shutil
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
from s2s.data.corpus import load_split
from s2s.errors import DataError, S2SError
from s2s.inference import Translator
from s2s.models import build_seq2seq, count_parameters
from s2s.pipelines.translation import Corpus, TranslationPipeline
from s2s.runs import load_run
from s2s.search import max_lengths
from s2s.tokenizer import PAD, TokenizerPair
from s2s.train import (
    Events,
    Progress,
    Trainer,
    autocast_dtype,
    epoch_batches,
    make_optimizer,
    resolve_device,
)

PRECISIONS = ("fp32", "bf16", "fp16")
DECODE_WARMUP_SENTENCES = 4
BEAMS = {"greedy": 1, "beam5": 5}


class Bench:
    """One benchmark: the recipe, the device, and (with ``--run``) a trained run's translator."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run_dir = Path(args.run) if args.run else None
        if self.run_dir is not None:
            _, self.run_translator = load_run(self.run_dir, args.checkpoint)
            recipe_file = self.run_dir / "recipe.yaml"
        else:
            self.run_translator = None
            recipe_file = Path(args.recipe)
        self.recipe: Recipe = load_recipe(recipe_file, args.set or [])
        self.device = resolve_device(self.recipe.train.device)
        self.precisions = args.precision or default_precisions(self.device)
        for precision in self.precisions:  # fail before any work: fp16 needs CUDA
            autocast_dtype(precision, self.device)
        if self.run_translator is not None:
            self.run_translator.model.to(self.device)

    def measure(self) -> list[dict]:
        config = self.recipe.train
        if config.threads:
            torch.set_num_threads(config.threads)
        with tempfile.TemporaryDirectory(prefix="s2s-bench-") as scratch:
            work = Path(scratch) / "run"
            work.mkdir()
            if self.run_translator is not None:  # the run's own tokenizer; the run stays untouched
                shutil.copytree(self.run_dir / "tokenizer", work / "tokenizer")
            say(f"preparing data for {self.recipe.name!r}")
            pipeline = TranslationPipeline(self.recipe)
            reuse = self.run_translator is not None
            train, valid = pipeline.prepare(work, StderrEvents(), reuse, pipeline.read_splits())
            tokenizers = pipeline.tokenizers
            if not train.src:
                raise DataError("no training pairs are left after filtering; nothing to benchmark")
            sentences, split = self.decode_sentences(valid)
            rows = []
            for precision in self.precisions:
                rows.append(self.row(precision, tokenizers, train, sentences, split, work))
                gc.collect()
        return rows

    def decode_sentences(self, valid: Corpus) -> tuple[list[str], str]:
        data = self.recipe.data
        if data.format == "generated" or data.test is not None:
            split, sources = "test", [s for s, _ in load_split(data, "test")]
        else:
            split, sources = "valid", valid.src_text
        count = self.args.decode_sentences
        return (sources if count is None else sources[:count]), split

    def row(
        self,
        precision: str,
        tokenizers: TokenizerPair,
        train: Corpus,
        sentences: list[str],
        split: str,
        work: Path,
    ) -> dict:
        recipe = self.recipe.model_copy(deep=True)
        recipe.train.precision = precision
        trainer = Trainer(recipe, work)  # resolves device and autocast dtype exactly as a training run does
        cuda = trainer.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        torch.manual_seed(recipe.train.seed)
        model = build_seq2seq(recipe.model, tokenizers.src.vocab_size, tokenizers.tgt.vocab_size).to(trainer.device)
        optimizer = make_optimizer(model, recipe.train)
        scaler = torch.amp.GradScaler(trainer.device.type, enabled=trainer.dtype == torch.float16)
        say(
            f"{precision}: {count_parameters(model):,} parameters on {trainer.device}; "
            f"training {self.args.warmup} + {self.args.steps} steps"
        )
        # what ran the recurrent loops and the loss: the compiled CPU kernels, or PyTorch operations from Python
        compiled = kernels.usable(torch.empty(0, device=trainer.device), torch.float32, trainer.dtype or torch.float32)
        result = {"device": str(trainer.device), "dtype": precision, "cpu_kernels": compiled}
        result.update(train_speed(trainer, model, optimizer, scaler, train, self.args.warmup, self.args.steps))
        result.update(efficiency(trainer, model, optimizer, scaler, train, result["train_tokens_per_s"]))
        if self.run_translator is not None:
            model = self.run_translator.model
            tokenizers = self.run_translator.tokenizers
        translator = Translator(model, tokenizers, recipe.eval, trainer.device, trainer.dtype)
        result["decode_split"] = split
        result["decode_model"] = (
            str(self.run_dir) if self.run_dir is not None else f"fresh, {self.args.warmup + self.args.steps} steps"
        )
        for name, beam in BEAMS.items():
            say(f"{precision}: decoding {len(sentences)} {split} sentences, {name}")
            figures = decode_speed(translator, sentences, beam, warm=self.args.warmup > 0)
            result.update({f"decode_{name}_{key}": value for key, value in figures.items()})
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(trainer.device) / 2**20, 1) if cuda else None
        return result


def train_speed(trainer: Trainer, model, optimizer, scaler, train: Corpus, warmup: int, steps: int) -> dict:
    """Time ``warmup`` + ``steps`` training steps; figures over the timed ones."""
    device, progress = trainer.device, Progress()
    rates, seconds_per_step, losses = [], [], []
    padded = positions = tokens_total = 0
    for n, indices in enumerate(itertools.islice(training_batches(trainer.config, train), warmup + steps)):
        synchronize(device)
        started = time.perf_counter()
        batch = train.batch(indices)
        loss, tokens = trainer.train_step(model, optimizer, scaler, batch.to(device), progress)
        synchronize(device)
        seconds = time.perf_counter() - started
        progress.step += 1
        progress.batch_in_epoch += 1
        if n < warmup:
            continue
        rates.append(tokens / max(seconds, 1e-9))
        seconds_per_step.append(seconds)
        losses.append(loss)
        tokens_total += tokens
        padded += int(batch.src.eq(PAD).sum()) + int(batch.tgt_out.eq(PAD).sum())
        positions += batch.src.numel() + batch.tgt_out.numel()
    mean_loss = statistics.fmean(losses)
    return {
        "train_tokens_per_s": round(statistics.median(rates), 1),
        "train_step_ms": round(1000 * statistics.median(seconds_per_step), 2),
        "train_steps": len(rates),
        "train_tokens": tokens_total,
        "train_loss": round(mean_loss, 4) if math.isfinite(mean_loss) else None,  # fp16 may overflow
        "padding_fraction": round(padded / max(1, positions), 4),
    }


def efficiency(trainer: Trainer, model, optimizer, scaler, train: Corpus, tokens_per_s: float) -> dict:
    """FLOPs per target token of one training step, the FLOP/s that makes at the measured speed, and that as a
    fraction of the device's matrix-product peak in the step's dtype."""
    # One more (counted) training step, after the timed ones: the model decoded afterwards has had one more update,
    # which changes nothing the decoding figures measure.
    indices = next(iter(training_batches(trainer.config, train)))
    batch = train.batch(indices)
    with kernels.disabled(), FlopCounterMode(display=False) as counter:
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


def training_batches(config: TrainConfig, train: Corpus) -> Iterator[list[int]]:
    """The example indices of each batch in the order ``Trainer.run`` draws them, epoch after epoch."""
    lengths = train.lengths()
    for epoch in itertools.count():
        yield from epoch_batches(config, lengths, epoch)


def decode_speed(translator: Translator, sentences: list[str], beam: int, warm: bool) -> dict:
    """Sentences/second over ``sentences``, mean output length and the share cut at the length limit."""
    if not sentences:
        return {"sents_per_s": None, "seconds": None, "mean_length": None, "at_limit": None}
    if warm:
        translator.translate(sentences[:DECODE_WARMUP_SENTENCES], beam_size=beam)
    synchronize(translator.device)
    started = time.perf_counter()
    outputs = translator.translate(sentences, beam_size=beam)
    synchronize(translator.device)
    seconds = time.perf_counter() - started
    best = [options[0] for options in outputs]
    source_lengths = torch.tensor([max(1, len(t.source_pieces)) for t in best])
    limits = max_lengths(source_lengths, translator.config.max_length_ratio).tolist()
    lengths = [len(t.hypothesis.tokens) for t in best]
    at_limit = sum(length + 1 >= limit for length, limit in zip(lengths, limits, strict=True))
    return {
        "sents_per_s": round(len(sentences) / max(seconds, 1e-9), 2),
        "seconds": round(seconds, 3),
        "mean_length": round(statistics.fmean(lengths), 1),
        "at_limit": round(at_limit / len(best), 3),
    }


def default_precisions(device: torch.device) -> list[str]:
    if device.type != "cuda":
        return ["fp32", "bf16"]
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
        f"decoding {first['decode_split']} ({first['decode_model']} model)"
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
        "greedy sent/s",
        "beam5 sent/s",
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
            number(row["decode_greedy_sents_per_s"]),
            number(row["decode_beam5_sents_per_s"]),
        )
    Console(width=max(160, Console().width)).print(table)


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
        help="decode the first N sentences of the test split (default all; 0: skip decoding)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
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
            f"note: decoding used a barely trained model (mean output length: greedy "
            f"{first['decode_greedy_mean_length']}, beam5 {first['decode_beam5_mean_length']} tokens; "
            f"{100 * first['decode_greedy_at_limit']:.0f}% of greedy outputs at the length limit), so its "
            "figures say little about a trained one: train first and pass --run RUN_DIR"
        )
    print_table(rows, args)
    if args.json:
        print(json.dumps(summary(rows)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
