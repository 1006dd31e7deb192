"""The ``s2s`` command: parse, call the library, present. Bad input ends in one line on stderr and exit 2 (usage)
or 1 (runtime), never a traceback."""

from __future__ import annotations

import enum
import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from s2s.errors import S2SError, UsageError


class Checkpoint(str, enum.Enum):
    best = "best"
    last = "last"
    averaged = "averaged"  # written by `s2s average`


class Precision(str, enum.Enum):  # what s2s serve runs its models in (on the CPU: fp16 autocast is CUDA's)
    fp32 = "fp32"
    bf16 = "bf16"


# the commands that use one kind of run, and that kind: the only task names the command line knows
COMMAND_TASKS = {
    "translate": "translation",
    "caption": "captioning",
    "classify": "classification",
    "tag": "tagging",
    "generate": "language_model",
}

app = typer.Typer(
    help="Recurrent sequence learning: train a YAML recipe, evaluate, translate, caption, classify, tag, generate.",
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


def open_run(path: Path, checkpoint: Checkpoint, command: str | None = None):
    """A trained run for ``command`` (None: any kind); a run of another kind names the command that fits it."""
    from s2s.runs import WrongTask, load_run

    try:
        return load_run(path, checkpoint.value, task=COMMAND_TASKS.get(command))
    except WrongTask as error:
        fitting = next((name for name, task in COMMAND_TASKS.items() if task == error.task), "evaluate")
        raise type(error)(f"{error}; use s2s {fitting}", error.task) from None


def search_options(recipe_beam: int, beam: int | None, nbest: int, alpha: float | None, sampling=None) -> dict:
    """Beam size (the recipe's, widened to ``nbest``, unless given), n-best and length penalty, checked; with
    ``sampling`` (``--sample``), ``nbest`` samples and no beam."""
    if sampling is not None:
        if beam is not None or alpha is not None:
            name = "--beam" if beam is not None else "--alpha"
            raise typer.BadParameter("does not apply with --sample (it draws --nbest samples)", param_hint=name)
        return {"beam_size": 1, "nbest": nbest, "alpha": 0.0, "sampling": sampling}
    beam = beam or max(recipe_beam, nbest)
    if nbest > beam:
        raise typer.BadParameter(f"--nbest {nbest} is larger than --beam {beam}", param_hint="--nbest")
    return {"beam_size": beam, "nbest": nbest, "alpha": alpha}


def sampling_options(sample: bool, temperature: float | None, top_k: int | None, top_p: float | None, seed):
    """``--sample`` and its settings → a ``Sampling`` (None without ``--sample``, where the settings are refused)."""
    from s2s.search import Sampling

    if not sample:
        given = {"--temperature": temperature, "--top-k": top_k, "--top-p": top_p, "--seed": seed}
        for name, value in given.items():
            if value is not None:
                raise typer.BadParameter("applies with --sample", param_hint=name)
        return None
    return Sampling(1.0 if temperature is None else temperature, top_k, top_p, seed)


def probability_mass(value: float | None) -> float | None:
    """``--top-p``'s check: a share of the probability mass, in (0, 1]."""
    if value is not None and not 0 < value <= 1:
        raise typer.BadParameter(f"{value} is not in (0, 1]")
    return value


BEAM_HELP = "Beam size (default: the recipe's eval.beam_size)."
ALPHA_HELP = "Length penalty alpha (default: the recipe's eval.length_penalty)."
Beam = Annotated[int | None, typer.Option(min=1, help=BEAM_HELP)]
Alpha = Annotated[float | None, typer.Option(min=0.0, help=ALPHA_HELP)]
Nbest = Annotated[int, typer.Option(min=1, help="Print this many answers per input, best first.")]
Weights = Annotated[Checkpoint, typer.Option(help="Which weights to use.")]
Texts = Annotated[list[str] | None, typer.Argument(help="Texts; without any, read stdin (a shell on a terminal).")]
Sample = Annotated[
    bool, typer.Option("--sample", help="Draw outputs from the model instead of searching for the best.")
]
Temperature = Annotated[
    float | None,
    typer.Option(min=0.0, help="Sampling temperature: below 1 sharper, above 1 flatter; 0 is greedy."),
]
TopK = Annotated[int | None, typer.Option(min=1, help="Sample from the K most likely tokens only.")]
TopP = Annotated[
    float | None,
    typer.Option(callback=probability_mass, help="Sample from the most likely tokens that hold this share, in (0, 1]."),
]
Seed = Annotated[int | None, typer.Option(help="Seed of the draws: the same seed gives the same output.")]


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
        bool, typer.Option("--overwrite", help="Replace an existing s2s run in the run directory instead of refusing.")
    ] = False,
    nproc: Annotated[
        int, typer.Option(min=1, help="Train in N processes with DDP (gloo on CPU, NCCL on GPUs), through torchrun.")
    ] = 1,
) -> None:
    """Train a model from a recipe; checkpoints, tokenizer, log and the resolved recipe go to the run directory."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from s2s.distributed import relaunch_with_torchrun

        relaunch_with_torchrun(nproc)
    from s2s.config import load_recipe
    from s2s.console import RichEvents
    from s2s.runs import remove_run
    from s2s.train import Trainer

    if recipe is None and resume is None:
        raise typer.BadParameter("give a RECIPE, or --resume RUN", param_hint="RECIPE")
    recipe_path = recipe if recipe is not None else resume / "recipe.yaml"
    notes: list[str] = []
    config = load_recipe(recipe_path, set_ or [], notes=notes)
    for note in notes:
        print(f"s2s: note: {note}", file=sys.stderr)
    target = resume or run_dir or Path(config.run_dir or f"runs/{config.name}")
    config.run_dir = str(target)
    if overwrite and resume is None:
        remove_run(target)
    summary = Trainer(config, target, RichEvents(), resume=resume is not None).run()
    if summary["stop"] in ("SIGINT", "SIGTERM"):
        raise typer.Exit(130 if summary["stop"] == "SIGINT" else 143)


@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory of a trained model.")],
    split: Annotated[str | None, typer.Option(help="Score this split of the run's recipe: valid or test.")] = None,
    src: Annotated[Path | None, typer.Option(help="Source sentences (plain or .gz), scored against --ref.")] = None,
    ref: Annotated[Path | None, typer.Option(help="Reference translations (plain or .gz), with --src.")] = None,
    data: Annotated[Path | None, typer.Option(help="Labelled texts: TSV/CSV/JSONL with the recipe's columns.")] = None,
    images: Annotated[Path | None, typer.Option(help="A folder of images, scored against --captions.")] = None,
    captions: Annotated[
        Path | None, typer.Option(help="IMAGE#N<TAB>caption lines (plain or .gz); only the images named are scored.")
    ] = None,
    text: Annotated[Path | None, typer.Option(help="A UTF-8 text (plain or .gz) to score a language model on.")] = None,
    beam: Beam = None,
    alpha: Alpha = None,
    plot_attention: Annotated[
        int, typer.Option(min=0, help="Write PNG attention heat maps of the first N sentences to OUT/attention/.")
    ] = 0,
    checkpoint: Weights = Checkpoint.best,
    out: Annotated[Path | None, typer.Option(help="Directory for hypotheses and pictures (default RUN/eval).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a report.")] = False,
) -> None:
    """Score a trained run on a split of its recipe, or on files of the kind its task reads (--src with --ref,
    --images with --captions, --data, or --text): the task's own scores, as a report or as one JSON object."""
    from s2s.pipelines import EvalSource, check_evaluation

    named = {"src": src, "ref": ref, "data": data, "images": images, "captions": captions, "text": text}
    files = {name: path for name, path in named.items() if path is not None}
    if split is not None and split not in ("valid", "test"):
        raise typer.BadParameter(f"{split!r} is not one of: valid, test", param_hint="--split")
    options = {k: v for k, v in {"beam": beam, "alpha": alpha, "plot_attention": plot_attention or None}.items() if v}
    loaded = open_run(run, checkpoint)
    check_evaluation(loaded.pipeline, loaded.recipe.task, split, files, options)
    evaluation = loaded.pipeline.evaluate(loaded.predictor, EvalSource(split, files), options, out or run / "eval")
    for note in evaluation.notes:
        typer.echo(note, err=True)
    typer.echo(json.dumps(evaluation.scores) if as_json else "\n".join(evaluation.report))


@app.command()
@user_errors
def translate(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained model.")],
    beam: Beam = None,
    nbest: Nbest = 1,
    alpha: Alpha = None,
    checkpoint: Weights = Checkpoint.best,
    show_attention: Annotated[
        bool, typer.Option("--show-attention", help="Print an attention heat map for each sentence (to stderr).")
    ] = False,
    input_: Annotated[Path | None, typer.Option("--input", help="Read sentences from this file.")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write translations to this file (written whole at the end).")
    ] = None,
    sample: Sample = False,
    temperature: Temperature = None,
    top_k: TopK = None,
    top_p: TopP = None,
    seed: Seed = None,
) -> None:
    """Translate: an interactive shell on a terminal, a line-by-line filter on a pipe (one line out per line in)."""
    from s2s.shell import filter_lines, interactive, read_input, translation_answer, translation_blocks, write_output

    sampling = sampling_options(sample, temperature, top_k, top_p, seed)
    loaded = open_run(model, checkpoint, "translate")
    translator = loaded.predictor
    if show_attention and not translator.has_attention:  # refused before any input is read
        raise UsageError("--show-attention: this model has no attention (its model.decoder.attention is none)")
    searching = search_options(loaded.recipe.eval.beam_size, beam, nbest, alpha, sampling)
    options = {**searching, "attention": show_attention}
    if input_ is not None or output is not None:
        write_output(translation_blocks(translator, read_input(input_), options), output)
    elif sys.stdin.isatty():
        interactive(lambda line: translation_answer(translator, line, options), "translate")
    else:
        respond = functools.partial(translation_blocks, translator, options=options)
        filter_lines(respond, sys.stdin.buffer, sys.stdout, loaded.recipe.eval.batch_size)


@app.command()
@user_errors
def classify(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained classifier.")],
    texts: Texts = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per text, with every label's probability.")
    ] = False,
    checkpoint: Weights = Checkpoint.best,
) -> None:
    """Classify texts: label<TAB>probability per text given, per stdin line on a pipe, or an interactive shell."""
    from s2s.shell import label_lines

    loaded = open_run(model, checkpoint, "classify")
    answer_texts(functools.partial(label_lines, loaded.predictor, as_json=as_json), texts, loaded, "classify")


@app.command()
@user_errors
def tag(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained tagger.")],
    texts: Texts = None,
    pretokenized: Annotated[
        bool, typer.Option("--pretokenized", help="Words are already separated by spaces: do not split them.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line: each word's tag, probability.")
    ] = False,
    conllu: Annotated[bool, typer.Option("--conllu", help="Write each line as a CoNLL-U sentence.")] = False,
    checkpoint: Weights = Checkpoint.best,
) -> None:
    """Tag words: word/TAG pairs per text given, per stdin line on a pipe (blank lines stay blank), or an
    interactive shell. Raw text is split into words the way UD English writes them (see docs/tagging.md)."""
    from s2s.shell import tag_lines

    if as_json and conllu:
        raise typer.BadParameter("--json and --conllu are two outputs: choose one", param_hint="--conllu")
    loaded = open_run(model, checkpoint, "tag")
    form = "json" if as_json else "conllu" if conllu else "pairs"
    answers = functools.partial(tag_lines, loaded.predictor, pretokenized=pretokenized, form=form)
    answer_texts(answers, texts, loaded, "tag")


def answer_texts(answers, texts: list[str] | None, loaded, command: str) -> None:
    """The answers to the texts given; without any, to stdin's lines: a shell on a terminal, a filter on a pipe."""
    from s2s.shell import filter_lines, interactive

    if texts:
        typer.echo("\n".join(answers(texts)))
    elif sys.stdin.isatty():
        interactive(lambda line: answers([line])[0], command)
    else:
        filter_lines(answers, sys.stdin.buffer, sys.stdout, loaded.recipe.eval.batch_size)


@app.command()
@user_errors
def caption(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained captioning model.")],
    paths: Annotated[list[Path], typer.Argument(help="Images, or folders to walk for images.")],
    beam: Beam = None,
    nbest: Nbest = 1,
    alpha: Alpha = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image.")] = False,
    checkpoint: Weights = Checkpoint.best,
    sample: Sample = False,
    temperature: Temperature = None,
    top_k: TopK = None,
    top_p: TopP = None,
    seed: Seed = None,
) -> None:
    """Caption images: path<TAB>caption per image. An unreadable file gets an error line and the rest go on;
    the exit code is then 1."""
    from s2s.shell import caption_files

    sampling = sampling_options(sample, temperature, top_k, top_p, seed)
    loaded = open_run(model, checkpoint, "caption")
    options = search_options(loaded.recipe.eval.beam_size, beam, nbest, alpha, sampling)
    if caption_files(loaded.predictor, paths, options, as_json):
        raise typer.Exit(1)


@app.command()
@user_errors
def generate(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained language model.")],
    prompt: Annotated[str, typer.Option(help="Text to go on from (default: the start of a text).")] = "",
    max_length: Annotated[
        int | None, typer.Option(min=1, help="Tokens to generate (default: the recipe's eval.generate.max_length).")
    ] = None,
    temperature: Temperature = None,
    top_k: TopK = None,
    top_p: TopP = None,
    seed: Seed = None,
    num: Annotated[int, typer.Option(min=1, help="How many texts to generate (drawn side by side).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per text.")] = False,
    checkpoint: Weights = Checkpoint.best,
) -> None:
    """Generate text from a language model: the prompt, then what the model writes after it, sampled (greedy with
    --temperature 0). One text streams to the output as it is made; --seed makes it the same every time. Sampling
    settings left out are the recipe's (eval.generate)."""
    from s2s.shell import generated_texts

    loaded = open_run(model, checkpoint, "generate")
    generator = loaded.predictor
    sampling = generator.sampling(temperature, top_k, top_p, seed)
    length = max_length or generator.config.generate.max_length
    generated_texts(generator, prompt, length, sampling, num, as_json)


@app.command()
@user_errors
def serve(
    runs: Annotated[list[Path], typer.Argument(help="Run directories of trained models, of any task.")],
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    max_batch: Annotated[int, typer.Option(min=1, help="Inputs per batch, gathered across requests.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="How long a batch waits for more requests.")] = 30.0,
    max_texts: Annotated[int, typer.Option(min=1, help="Texts per request.")] = 64,
    max_chars: Annotated[int, typer.Option(min=1, help="Characters per text (and per prompt).")] = 2000,
    max_images: Annotated[int, typer.Option(min=1, help="Images per request.")] = 8,
    max_image_bytes: Annotated[int, typer.Option(min=1, help="Bytes per image file.")] = 5_000_000,
    max_pixels: Annotated[int, typer.Option(min=1, help="Pixels (width × height) per image.")] = 25_000_000,
    max_generate: Annotated[int, typer.Option(min=1, help="Tokens per generated text.")] = 2000,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds to answer a request before a 504.")] = 30.0,
    precision: Annotated[
        Precision, typer.Option(help="Run the models in fp32, or with bf16 autocast (faster on CPUs with bf16 units).")
    ] = Precision.fp32,
) -> None:
    """Serve trained runs over HTTP: one endpoint per task (POST /translate, /caption, /classify, /tag, /generate),
    a web page at /, GET /models, /health/live and /health/ready, the OpenAPI description at /docs. Concurrent
    requests to a model are batched."""
    from s2s.serve.limits import Limits
    from s2s.serve.server import serve_runs

    limits = Limits(
        max_batch=max_batch,
        max_wait=max_wait_ms / 1000,
        max_texts=max_texts,
        max_chars=max_chars,
        max_images=max_images,
        max_image_bytes=max_image_bytes,
        max_pixels=max_pixels,
        max_generate=max_generate,
        timeout=timeout,
    )
    serve_runs(runs, host, port, limits, precision.value)


@app.command()
@user_errors
def average(
    run: Annotated[Path, typer.Argument(help="Run directory of a trained model.")],
    last: Annotated[int, typer.Option(min=1, help="Average the newest N step checkpoints of the run.")] = 5,
) -> None:
    """Average the last N checkpoints of a run into RUN/averaged.safetensors (use --checkpoint averaged)."""
    from s2s.runs import average_run

    chosen = average_run(run, last)
    typer.echo(f"averaged {', '.join(p.stem for p in chosen)} into {run / 'averaged.safetensors'}")


def main() -> None:
    app()
