"""The ``s2s`` command: parse, call the library, present. Bad input ends in one line on stderr and exit 2 (usage)
or 1 (runtime), never a traceback."""

from __future__ import annotations

import enum
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from s2s.errors import S2SError


class Checkpoint(str, enum.Enum):
    best = "best"
    last = "last"
    averaged = "averaged"  # written by `s2s average`


app = typer.Typer(
    help="Recurrent sequence-to-sequence learning: train from a YAML recipe, evaluate, translate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(command):
    """Turn S2SError into its one-line message and exit code."""

    @functools.wraps(command)
    def guarded(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except S2SError as error:
            typer.echo(f"s2s: error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None
        except BrokenPipeError:  # the reader went away (`s2s translate … | head`): nothing left to say
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush fails quietly too
            raise typer.Exit(0) from None
        except OSError as error:  # a file the user named cannot be read or written
            where = f"{error.filename}: " if error.filename else ""
            typer.echo(f"s2s: error: {where}{error.strerror or error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("s2s: interrupted", err=True)
            raise typer.Exit(130) from None

    return guarded


@app.command()
@user_errors
def train(
    recipe: Annotated[Path | None, typer.Argument(help="YAML recipe; may be left out with --resume RUN.")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Run directory (overrides the recipe's).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe value, e.g. --set train.lr=3e-4 (repeatable)."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the run in this directory from its last checkpoint."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run in the run directory instead of refusing.")
    ] = False,
) -> None:
    """Train a model from a recipe; checkpoints, tokenizer, log and the resolved recipe go to the run directory."""
    from s2s.config import load_recipe
    from s2s.console import RichEvents
    from s2s.train import Trainer

    if recipe is None and resume is None:
        raise typer.BadParameter("give a RECIPE, or --resume RUN", param_hint="RECIPE")
    recipe_path = recipe if recipe is not None else resume / "recipe.yaml"
    config = load_recipe(recipe_path, set_ or [])
    target = resume or run_dir or Path(config.run_dir or f"runs/{config.name}")
    config.run_dir = str(target)
    if overwrite and resume is None and (target / "recipe.yaml").is_file():
        shutil.rmtree(target)
    summary = Trainer(config, target, RichEvents(), resume=resume is not None).run()
    if summary["stop"] in ("SIGINT", "SIGTERM"):
        raise typer.Exit(130 if summary["stop"] == "SIGINT" else 143)


@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory of a trained model.")],
    split: Annotated[str | None, typer.Option(help="Score this split of the run's recipe: valid or test.")] = None,
    src: Annotated[Path | None, typer.Option(help="Source file to translate (plain or .gz), with --ref.")] = None,
    ref: Annotated[Path | None, typer.Option(help="Reference file (plain or .gz), with --src.")] = None,
    beam: Annotated[int | None, typer.Option(min=1, help="Beam size (default: the recipe's eval.beam_size).")] = None,
    alpha: Annotated[
        float | None, typer.Option(min=0.0, help="Length penalty alpha (default: the recipe's eval.length_penalty).")
    ] = None,
    checkpoint: Annotated[Checkpoint, typer.Option(help="Which weights to use.")] = Checkpoint.best,
    out: Annotated[
        Path | None, typer.Option(help="Directory for hypotheses (NAME.hyp.txt) and pictures (default RUN/eval).")
    ] = None,
    plot_attention: Annotated[
        int, typer.Option(min=0, help="Write PNG attention heat maps of the first N sentences to OUT/attention/.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a report.")] = False,
) -> None:
    """Translate a split (or --src/--ref files) and score it with sacreBLEU: BLEU, chrF, exact match."""
    from s2s.data.corpus import load_split, read_text_pair
    from s2s.files import atomic_write
    from s2s.metrics import score_corpus
    from s2s.pictures import save_heatmaps
    from s2s.runs import load_run

    if (split is None) == (src is None):
        raise typer.BadParameter("give either --split or --src with --ref", param_hint="--split")
    if (src is None) != (ref is None):
        raise typer.BadParameter("--src and --ref go together", param_hint="--ref")
    if split is not None and split not in ("valid", "test"):
        raise typer.BadParameter(f"{split!r} is not one of: valid, test", param_hint="--split")
    recipe, translator = load_run(run, checkpoint.value)
    pairs = load_split(recipe.data, split) if split else read_text_pair(src, ref)
    sources = [s for s, _ in pairs]
    started = time.perf_counter()
    hypotheses = translator.best(sources, beam_size=beam, alpha=alpha)
    seconds = time.perf_counter() - started
    result = {**score_corpus(hypotheses, [t for _, t in pairs]), "seconds": round(seconds, 2)}
    out = out or run / "eval"
    hypotheses_file = out / f"{split or Path(src).name}.hyp.txt"
    text = "".join(h + "\n" for h in hypotheses)
    atomic_write(hypotheses_file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    result["hypotheses"] = str(hypotheses_file)
    if plot_attention:
        with_attention = translator.translate(sources[:plot_attention], beam_size=beam, alpha=alpha, attention=True)
        result["attention_plots"] = [str(p) for p in save_heatmaps(with_attention, out / "attention")]
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"BLEU  {result['bleu']:6.2f}  {result['signature']['bleu']}")
    typer.echo(f"chrF  {result['chrf']:6.2f}  {result['signature']['chrf']}")
    typer.echo(f"exact {result['exact_match']:6.2f}  ({result['n_sentences']} sentences, {seconds:.1f} s)")
    typer.echo(f"hypotheses: {hypotheses_file}")
    if plot_attention:
        typer.echo(f"attention heat maps: {out / 'attention'}")


@app.command()
@user_errors
def translate(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained model.")],
    beam: Annotated[int | None, typer.Option(min=1, help="Beam size (default: the recipe's eval.beam_size).")] = None,
    nbest: Annotated[int, typer.Option(min=1, help="Print this many translations per sentence.")] = 1,
    alpha: Annotated[
        float | None, typer.Option(min=0.0, help="Length penalty alpha (default: the recipe's eval.length_penalty).")
    ] = None,
    checkpoint: Annotated[Checkpoint, typer.Option(help="Which weights to use.")] = Checkpoint.best,
    show_attention: Annotated[
        bool, typer.Option("--show-attention", help="Print an attention heat map for each sentence (to stderr).")
    ] = False,
    input_: Annotated[Path | None, typer.Option("--input", help="Read sentences from this file.")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write translations to this file (written whole at the end).")
    ] = None,
) -> None:
    """Translate: an interactive shell on a terminal, a line-by-line filter on a pipe (one line out per line in)."""
    from s2s.data.corpus import decode_lines, read_lines
    from s2s.files import atomic_write
    from s2s.runs import load_run
    from s2s.shell import filter_lines, interactive, translation_answer, translation_blocks

    recipe, translator = load_run(model, checkpoint.value)
    beam = beam or max(recipe.eval.beam_size, nbest)
    if nbest > beam:
        raise typer.BadParameter(f"--nbest {nbest} is larger than --beam {beam}", param_hint="--nbest")
    options = {"beam_size": beam, "nbest": nbest, "alpha": alpha, "attention": show_attention}
    if input_ is not None or output is not None:
        lines = read_lines(input_) if input_ is not None else decode_lines(sys.stdin.buffer.read(), "<stdin>")
        text = "".join(block + "\n" for block in translation_blocks(translator, lines, options))
        if output is None:
            sys.stdout.write(text)
        else:
            atomic_write(output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    elif sys.stdin.isatty():
        interactive(lambda line: translation_answer(translator, line, options), "translate")
    else:
        respond = functools.partial(translation_blocks, translator, options=options)
        filter_lines(respond, sys.stdin.buffer, sys.stdout, recipe.eval.batch_size)


@app.command()
@user_errors
def average(
    run: Annotated[Path, typer.Argument(help="Run directory of a trained model.")],
    last: Annotated[int, typer.Option(min=1, help="Average the newest N step checkpoints of the run.")] = 5,
) -> None:
    """Average the last N checkpoints of a run into RUN/averaged.safetensors (use --checkpoint averaged)."""
    from s2s.checkpoint import average_checkpoints, step_checkpoints
    from s2s.errors import RunError
    from s2s.runs import require_run

    run = require_run(run)
    available = step_checkpoints(run)
    if len(available) < last:
        raise RunError(f"{run}: {len(available)} step checkpoints in {run / 'checkpoints'}, fewer than --last {last}")
    chosen = available[-last:]
    average_checkpoints(chosen, run / "averaged.safetensors")
    typer.echo(f"averaged {', '.join(p.stem for p in chosen)} into {run / 'averaged.safetensors'}")


def main() -> None:
    app()
