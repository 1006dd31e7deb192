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
    help="Recurrent sequence-to-sequence learning: train from a YAML recipe, evaluate, translate, caption, classify.",
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
    nproc: Annotated[
        int, typer.Option(min=1, help="Train in N processes with DDP (gloo on CPU, NCCL on GPUs), through torchrun.")
    ] = 1,
) -> None:
    """Train a model from a recipe; checkpoints, tokenizer, log and the resolved recipe go to the run directory."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        relaunch_with_torchrun(nproc)
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


def relaunch_with_torchrun(nproc: int) -> None:
    """Replace this process by ``torchrun --nproc_per_node=N -m s2s train …`` with the same arguments."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "s2s", *args]
    os.execv(sys.executable, command)


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
    data: Annotated[
        Path | None,
        typer.Option(help="Classification: a TSV/CSV/JSONL file with the recipe's text and label columns."),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Captioning: a folder of images, scored against --captions.")
    ] = None,
    captions: Annotated[
        Path | None,
        typer.Option(help="Captioning: IMAGE#N<TAB>caption lines (plain or .gz); only the images named are scored."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a report.")] = False,
) -> None:
    """Score a trained run on a split or on files. Translation: BLEU, chrF and exact match (sacreBLEU) of
    --split or --src/--ref. Captioning: BLEU-1…4 against all references of --split or --images/--captions.
    Classification: accuracy, macro-F1 and the confusion matrix of --split or --data."""
    from s2s.runs import load_run

    if sum(option is not None for option in (split, src, data, images)) != 1:
        raise typer.BadParameter(
            "give one of --split, --src with --ref, --data, or --images with --captions", param_hint="--split"
        )
    if (src is None) != (ref is None):
        raise typer.BadParameter("--src and --ref go together", param_hint="--ref")
    if (images is None) != (captions is None):
        raise typer.BadParameter("--images and --captions go together", param_hint="--captions")
    if split is not None and split not in ("valid", "test"):
        raise typer.BadParameter(f"{split!r} is not one of: valid, test", param_hint="--split")
    recipe, predictor = load_run(run, checkpoint.value, task=None)
    if recipe.task == "classification":
        unused = {"--src": src, "--beam": beam, "--alpha": alpha, "--plot-attention": plot_attention or None}
        for name, value in unused.items():
            if value is not None:
                raise typer.BadParameter("does not apply to a classification run", param_hint=name)
        evaluate_classifier(recipe, predictor, split, data, as_json)
        return
    if recipe.task == "captioning":
        for name, value in {"--src": src, "--data": data, "--plot-attention": plot_attention or None}.items():
            if value is not None:
                raise typer.BadParameter("does not apply to a captioning run", param_hint=name)
        evaluate_captioner(recipe, predictor, split, (images, captions), beam, alpha, out or run / "eval", as_json)
        return
    if data is not None or images is not None:
        raise typer.BadParameter("applies to classification or captioning runs", param_hint="--data/--images")
    evaluate_translator(predictor, recipe, split, (src, ref), beam, alpha, out or run / "eval", plot_attention, as_json)


def evaluate_translator(translator, recipe, split, files: tuple, beam, alpha, out: Path, plot: int, as_json: bool):
    from s2s.data.corpus import load_split, read_text_pair
    from s2s.files import atomic_write
    from s2s.metrics import score_corpus
    from s2s.pictures import save_heatmaps

    src, ref = files
    pairs = load_split(recipe.data, split) if split else read_text_pair(src, ref)
    sources = [s for s, _ in pairs]
    started = time.perf_counter()
    hypotheses = translator.best(sources, beam_size=beam, alpha=alpha)
    seconds = time.perf_counter() - started
    result = {**score_corpus(hypotheses, [t for _, t in pairs]), "seconds": round(seconds, 2)}
    hypotheses_file = out / f"{split or Path(src).name}.hyp.txt"
    text = "".join(h + "\n" for h in hypotheses)
    atomic_write(hypotheses_file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    result["hypotheses"] = str(hypotheses_file)
    if plot:
        with_attention = translator.translate(sources[:plot], beam_size=beam, alpha=alpha, attention=True)
        result["attention_plots"] = [str(p) for p in save_heatmaps(with_attention, out / "attention")]
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"BLEU  {result['bleu']:6.2f}  {result['signature']['bleu']}")
    typer.echo(f"chrF  {result['chrf']:6.2f}  {result['signature']['chrf']}")
    typer.echo(f"exact {result['exact_match']:6.2f}  ({result['n_sentences']} sentences, {seconds:.1f} s)")
    typer.echo(f"hypotheses: {hypotheses_file}")
    if plot:
        typer.echo(f"attention heat maps: {out / 'attention'}")


def evaluate_classifier(recipe, classifier, split: str | None, data: Path | None, as_json: bool) -> None:
    from s2s.data.labelled import load_labelled, read_column_file
    from s2s.pipelines.classification import score_rows

    if data is not None:
        rows = read_column_file(recipe.data.model_copy(update={"format": column_format(data, recipe)}), data)
    else:
        rows = load_labelled(recipe.data, split)
    started = time.perf_counter()
    result = {**score_rows(classifier, rows), "seconds": round(time.perf_counter() - started, 2)}
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"accuracy {result['accuracy']:6.2f}")
    typer.echo(f"macro-F1 {result['macro_f1']:6.2f}  ({result['n_examples']:,} texts, {result['seconds']:.1f} s)")
    typer.echo(confusion_table(result["labels"], result["confusion"]))


def evaluate_captioner(recipe, captioner, split, named: tuple, beam, alpha, out: Path, as_json: bool) -> None:
    from s2s.data.images import load_captioned, open_image, read_flickr8k_captions
    from s2s.features import extract_features
    from s2s.files import atomic_write
    from s2s.metrics import caption_scores
    from s2s.pipelines.captioning import feature_cache

    image_dir, captions_file = named
    if split is not None:
        pictures = load_captioned(recipe.data, split)
        paths, references = pictures.images, pictures.captions
    else:
        if not image_dir.is_dir():
            raise typer.BadParameter(f"{image_dir}: no such folder", param_hint="--images")
        named_captions = read_flickr8k_captions(captions_file)
        paths, references = [image_dir / name for name in named_captions], list(named_captions.values())
    started = time.perf_counter()
    encoder = captioner.model.eval().encoder  # grids computed here are stored: fixed batch-norm statistics
    cache = feature_cache(recipe, encoder.backbone)
    if cache is not None:  # the grids training computed for these images, where it did
        grids, computed = extract_features(paths, encoder.features, recipe.data.image_size, cache)
        typer.echo(f"image features: {len(paths) - computed:,} of {len(paths):,} read from {cache.folder}", err=True)
        results = captioner.caption_inputs(list(grids.float()), beam_size=beam, alpha=alpha)
    else:
        results = captioner.caption([open_image(p) for p in paths], beam_size=beam, alpha=alpha)
    hypotheses = [options[0].text for options in results]
    result = {**caption_scores(hypotheses, references), "seconds": round(time.perf_counter() - started, 2)}
    hypotheses_file = out / f"{split or captions_file.name}.captions.tsv"
    names = [str(p) if isinstance(p, Path) else f"#{i}" for i, p in enumerate(paths)]
    text = "".join(f"{name}\t{caption}\n" for name, caption in zip(names, hypotheses, strict=True))
    atomic_write(hypotheses_file, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    result["hypotheses"] = str(hypotheses_file)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{'':6} {result['setting']:>31}  as given (cased, punctuation as tokens)")
    for order in (1, 2, 3, 4):
        typer.echo(f"BLEU-{order} {result[f'bleu{order}']:31.2f}  {result[f'cased_bleu{order}']:6.2f}")
    typer.echo(f"{result['signature']}  (lowercased, punctuation removed)")
    typer.echo(f"{result['cased_signature']}  (as given)")
    typer.echo(f"{result['n_images']:,} images, {result['seconds']:.1f} s")
    typer.echo(f"captions: {hypotheses_file}")


def column_format(path: Path, recipe) -> str:
    """The format of a --data file from its name (data.tsv, data.csv.gz, data.jsonl …), else the recipe's."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    known = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
    return known.get(suffixes[-1] if suffixes else "", recipe.data.format)


def confusion_table(labels: list[str], confusion: list[list[int]]) -> str:
    """Rows: the gold label; columns: the predicted one."""
    width = max(8, *(len(label) + 2 for label in labels))
    lines = ["gold \\ predicted".ljust(width + 8) + "".join(label.rjust(width) for label in labels)]
    for label, row in zip(labels, confusion, strict=True):
        lines.append(label.ljust(width + 8) + "".join(f"{count:,}".rjust(width) for count in row))
    return "\n".join(lines)


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
def classify(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained classifier.")],
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to classify; without any, read stdin (a shell on a terminal).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per text, with every label's probability.")
    ] = False,
    checkpoint: Annotated[Checkpoint, typer.Option(help="Which weights to use.")] = Checkpoint.best,
) -> None:
    """Classify texts: label<TAB>probability per text given, per stdin line on a pipe, or an interactive shell."""
    from s2s.runs import load_run
    from s2s.shell import filter_lines, interactive

    recipe, classifier = load_run(model, checkpoint.value, task="classification")

    def answers(lines: list[str]) -> list[str]:
        texts_ = [line for line in lines if line.strip()]
        predictions = iter(classifier.classify(texts_) if texts_ else ())
        return [present_label(line, next(predictions), as_json) if line.strip() else "" for line in lines]

    if texts:
        typer.echo("\n".join(answers(texts)))
    elif sys.stdin.isatty():
        interactive(lambda line: answers([line])[0], "classify")
    else:
        filter_lines(answers, sys.stdin.buffer, sys.stdout, recipe.eval.batch_size)


def present_label(text: str, prediction, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "text": text,
                "label": prediction.label,
                "probability": round(prediction.probability, 4),
                "probabilities": {k: round(v, 4) for k, v in prediction.probabilities.items()},
            },
            ensure_ascii=False,
        )
    return f"{prediction.label}\t{prediction.probability:.4f}"


@app.command()
@user_errors
def caption(
    model: Annotated[Path, typer.Option("--model", help="Run directory of a trained captioning model.")],
    paths: Annotated[list[Path], typer.Argument(help="Images, or folders to walk for images.")],
    beam: Annotated[int | None, typer.Option(min=1, help="Beam size (default: the recipe's eval.beam_size).")] = None,
    nbest: Annotated[int, typer.Option(min=1, help="Print this many captions per image.")] = 1,
    alpha: Annotated[float | None, typer.Option(min=0.0, help="Length penalty alpha.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image.")] = False,
    checkpoint: Annotated[Checkpoint, typer.Option(help="Which weights to use.")] = Checkpoint.best,
) -> None:
    """Caption images: path<TAB>caption per image. An unreadable file gets an error line and the rest go on;
    the exit code is then 1."""
    from s2s.data.images import BadImage, image_files, open_image
    from s2s.runs import load_run

    recipe, captioner = load_run(model, checkpoint.value, task="captioning")
    beam = beam or max(recipe.eval.beam_size, nbest)
    if nbest > beam:
        raise typer.BadParameter(f"--nbest {nbest} is larger than --beam {beam}", param_hint="--nbest")
    failed, files = 0, []
    for path in paths:
        found = image_files([path])
        if path.is_dir() and not found:
            typer.echo(f"s2s: error: {path}: no image files in this folder", err=True)
            failed += 1
        files += found
    for start in range(0, len(files), recipe.eval.batch_size):
        good, pictures = [], []
        for path in files[start : start + recipe.eval.batch_size]:
            try:
                pictures.append(open_image(path))
                good.append(path)
            except BadImage as error:
                typer.echo(f"s2s: error: {error}", err=True)
                failed += 1
        results = captioner.caption(pictures, beam_size=beam, nbest=nbest, alpha=alpha) if pictures else []
        for path, options in zip(good, results, strict=True):
            typer.echo(present_captions(path, options, as_json))
    if failed:
        raise typer.Exit(1)


def present_captions(path: Path, options, as_json: bool) -> str:
    if as_json:
        captions = [{"caption": c.text, "score": round(c.hypothesis.normalized, 4)} for c in options]
        return json.dumps({"image": str(path), "captions": captions}, ensure_ascii=False)
    if len(options) == 1:
        return f"{path}\t{options[0].text}"
    return "\n".join(f"{path}\t{k}\t{c.hypothesis.normalized:.4f}\t{c.text}" for k, c in enumerate(options, 1))


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
