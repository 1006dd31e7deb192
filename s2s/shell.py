"""Front ends of trained models: an interactive shell for terminals, a line-by-line filter for pipes, and how each
command presents its answers (translations, labels, captions).

The shell and the filter take a ``respond`` function, so translation and classification share them: the shell's
answers one line typed, the filter's answers a list of lines with one output block (one or more lines) per input
line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

from s2s.data.corpus import decode_lines, not_utf8, read_lines
from s2s.data.images import BadImage, image_files, open_image
from s2s.data.tagged import conllu_lines, split_words
from s2s.files import write_text
from s2s.inference import (
    Caption,
    ImageCaptioner,
    Prediction,
    TextClassifier,
    TextGenerator,
    TextIncrements,
    Translation,
    Translator,
    WordTag,
    WordTagger,
)
from s2s.pictures import terminal_heatmap
from s2s.search import Sampling

HISTORY = Path(os.environ.get("S2S_HISTORY", Path.home() / ".s2s_history"))


def interactive(respond: Callable[[str], str], command: str, out: TextIO = sys.stdout) -> None:
    """Prompt, answer, show the time; an empty line or Ctrl-D quits, Ctrl-C drops the current line."""
    try:
        import readline  # line editing and history where the platform has it
    except ImportError:
        readline = None
    if readline is not None and HISTORY.is_file():
        readline.read_history_file(HISTORY)
    print(f"s2s {command}: type a sentence; an empty line or Ctrl-D quits.", file=out)
    try:
        while True:
            try:
                line = input("> ")
            except KeyboardInterrupt:
                print("^C", file=out)
                continue
            except EOFError:
                print(file=out)
                break
            if not is_utf8(line):
                print("s2s: that line is not valid UTF-8; try again", file=out)
                continue
            if not line.strip():
                break
            started = time.perf_counter()
            print(respond(line), file=out)
            print(f"  ({time.perf_counter() - started:.2f} s)", file=out, flush=True)
    finally:
        if readline is not None:
            with contextlib.suppress(OSError):  # a read-only home must not break the shell
                readline.write_history_file(HISTORY)


def filter_lines(
    respond: Callable[[list[str]], list[str]], source: TextIO | BinaryIO, sink: TextIO, batch_size: int
) -> int:
    """One output block per input line, in order. Lines that are already waiting are answered together;
    a writer that sends one line and waits for its answer is answered at once. Returns the line count.

    A reader thread queues lines as they arrive, so "already waiting" includes lines that the file object
    has buffered (which ``select`` on the descriptor cannot see)."""
    lines: queue.Queue[str | Exception | None] = queue.Queue()
    threading.Thread(target=_read_into, args=(source, lines), daemon=True).start()
    count, end = 0, False
    while end is False:
        pending = [lines.get()]
        while isinstance(pending[-1], str) and len(pending) < batch_size and not lines.empty():
            pending.append(lines.get_nowait())
        if not isinstance(pending[-1], str):  # None at the end of the input, or an error reading it
            end = pending.pop()
        if pending:
            sink.writelines(block + "\n" for block in respond(pending))
            sink.flush()
            count += len(pending)
    if isinstance(end, Exception):
        raise end
    return count


def _read_into(source: TextIO | BinaryIO, lines: queue.Queue) -> None:
    """Queue each line of ``source``; bytes are decoded line by line, so a bad byte names its line."""
    for number, line in enumerate(_lines_of(source), start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as error:
                lines.put(not_utf8(getattr(source, "name", "input"), number, error))
                break
        lines.put(line.rstrip("\r\n"))
    lines.put(None)


def _lines_of(source: TextIO | BinaryIO):
    """The lines of ``source``, from its file descriptor where it has one. A thread waiting in a file object's
    ``readline`` holds that object's lock, and an interpreter that exits (on an error, say) while a daemon thread
    holds the lock of stdin aborts instead of exiting; ``os.read`` holds no lock of Python's."""
    try:
        descriptor = source.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        yield from iter(source.readline, source.read(0))
        return
    pending = b""
    while chunk := os.read(descriptor, 1 << 16):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line + b"\n" for line in complete)
    if pending:
        yield pending


def translation_blocks(translator: Translator, lines: list[str], options: dict) -> list[str]:
    """The filter's answer: blank lines stay blank; an n-best list is ``rank<TAB>score<TAB>text`` lines; attention
    heat maps go to stderr, so the output stays one block per input line."""
    texts = [line for line in lines if line.strip()]
    results = iter(translator.translate(texts, **options)) if texts else iter(())
    blocks = []
    for line in lines:
        if not line.strip():
            blocks.append("")
            continue
        options_ = next(results)
        if options.get("attention"):
            print(heatmap(options_[0]), file=sys.stderr)
        if len(options_) == 1:
            blocks.append(options_[0].text)
        else:
            ranked = enumerate(options_, start=1)
            blocks.append("\n".join(f"{k}\t{r.hypothesis.normalized:.4f}\t{r.text}" for k, r in ranked))
    return blocks


def translation_answer(translator: Translator, line: str, options: dict) -> str:
    """The shell's answer: the translation (numbered when n-best), with a heat map when asked."""
    results = translator.translate([line], **options)[0]
    parts = []
    for rank, result in enumerate(results):
        parts.append(f"{rank + 1}. {result.text}" if len(results) > 1 else result.text)
        if options.get("attention"):
            parts.append(heatmap(result))
    return "\n".join(parts)


def is_utf8(text: str) -> bool:
    """False for text that came with undecodable bytes (kept as surrogates by Python's terminal handling)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def heatmap(result: Translation) -> str:
    return terminal_heatmap(result.source_pieces, result.target_pieces, result.hypothesis.attention)


def read_input(path: Path | None) -> list[str]:
    """The lines to answer: of the file named, else all of stdin (bad bytes name their line)."""
    if path is not None:
        return read_lines(path)
    return decode_lines(sys.stdin.buffer.read(), "<stdin>")


def write_output(blocks: list[str], path: Path | None) -> None:
    """Answers to stdout, or to ``path`` written whole at the end (an interrupted run leaves no half file)."""
    if path is None:
        sys.stdout.write("".join(block + "\n" for block in blocks))
    else:
        write_text(path, blocks)


def label_line(text: str, prediction: Prediction, as_json: bool) -> str:
    """``label<TAB>probability``, or one JSON object with every label's probability."""
    if not as_json:
        return f"{prediction.label}\t{prediction.probability:.4f}"
    probabilities = {k: round(v, 4) for k, v in prediction.probabilities.items()}
    answer = {"text": text, "label": prediction.label, "probability": round(prediction.probability, 4)}
    return json.dumps({**answer, "probabilities": probabilities}, ensure_ascii=False)


def label_lines(classifier: TextClassifier, lines: list[str], as_json: bool) -> list[str]:
    """One answer per line; blank lines stay blank."""
    texts = [line for line in lines if line.strip()]
    predictions = iter(classifier.classify(texts) if texts else ())
    return [label_line(line, next(predictions), as_json) if line.strip() else "" for line in lines]


def caption_files(captioner: ImageCaptioner, paths: list[Path], options: dict, as_json: bool) -> int:
    """Print the captions of the images named (folders are walked), a batch at a time; an unreadable file gets
    an error line on stderr and the others go on. Returns how many could not be captioned."""
    failed, files = 0, []
    for path in paths:
        found = image_files([path])
        if path.is_dir() and not found:
            print(f"s2s: error: {path}: no image files in this folder", file=sys.stderr)
            failed += 1
        files += found
    size = captioner.config.batch_size
    for start in range(0, len(files), size):
        good, pictures = [], []
        for path in files[start : start + size]:
            try:
                pictures.append(open_image(path))
                good.append(path)
            except BadImage as error:
                print(f"s2s: error: {error}", file=sys.stderr)
                failed += 1
        results = captioner.caption(pictures, **options) if pictures else []
        for path, captions in zip(good, results, strict=True):
            print(caption_block(path, captions, as_json), flush=True)
    return failed


def caption_block(path: Path, captions: list[Caption], as_json: bool) -> str:
    if as_json:
        ranked = [{"caption": c.text, "score": round(c.hypothesis.normalized, 4)} for c in captions]
        return json.dumps({"image": str(path), "captions": ranked}, ensure_ascii=False)
    if len(captions) == 1:
        return f"{path}\t{captions[0].text}"
    return "\n".join(f"{path}\t{k}\t{c.hypothesis.normalized:.4f}\t{c.text}" for k, c in enumerate(captions, 1))


def tag_lines(tagger: WordTagger, lines: list[str], pretokenized: bool, form: str) -> list[str]:
    """One answer block per line, blank lines blank: ``word/TAG`` pairs (``form`` "pairs"), one JSON object with
    every word's tag and probability ("json"), or a CoNLL-U sentence ("conllu"). Lines are split into words by the
    UD-style tokenizer, or at spaces when ``pretokenized``."""
    texts = [line for line in lines if line.strip()]
    sentences = [line.split() if pretokenized else split_words(line) for line in texts]
    answers = iter(zip(texts, sentences, tagger.tag(sentences) if sentences else [], strict=True))
    return [tag_block(*next(answers), form) if line.strip() else "" for line in lines]


def tag_block(text: str, words: list[str], tags: list[WordTag], form: str) -> str:
    if form == "json":
        tagged = [
            {"word": w, "tag": t.tag, "probability": round(t.probability, 4)} for w, t in zip(words, tags, strict=True)
        ]
        return json.dumps({"text": text, "words": tagged}, ensure_ascii=False)
    if form == "conllu":
        return "\n".join([f"# text = {text}", *conllu_lines([words], [[t.tag for t in tags]], "upos")])
    return " ".join(f"{w}/{t.tag}" for w, t in zip(words, tags, strict=True))


def generated_texts(
    generator: TextGenerator, prompt: str, max_length: int, sampling: Sampling, count: int, as_json: bool
) -> None:
    """Print ``count`` texts, each the prompt and what follows it. A single plain text streams as it is made
    (flushed after every token); several are printed when all are done, separated by a line ``---``, or as one
    JSON object each."""
    generator.prompt_ids(prompt)  # a prompt the model cannot read is refused before anything is printed
    if count == 1 and not as_json:
        print(prompt, end="", flush=True)
        increments = TextIncrements(generator.tokenizer, 1, lambda row, text: print(text, end="", flush=True))
        generator.generate(prompt, max_length, sampling, 1, emit=increments.emit)
        print(flush=True)
        return
    texts = generator.generate(prompt, max_length, sampling, count)
    if as_json:
        for text in texts:
            print(json.dumps({"prompt": prompt, "text": text, "seed": sampling.seed}, ensure_ascii=False))
        return
    print("\n---\n".join(prompt + text for text in texts))
