"""Front ends of trained models: an interactive shell for terminals, a line-by-line filter for pipes.

Both take a ``respond`` function, so translation and classification share them: the shell's answers one line
typed, the filter's answers a list of lines with one output block (one or more lines) per input line.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

from s2s.data.corpus import not_utf8
from s2s.inference import Translation, Translator
from s2s.pictures import terminal_heatmap

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
    for number, line in enumerate(iter(source.readline, source.read(0)), start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as error:
                lines.put(not_utf8(getattr(source, "name", "input"), number, error))
                break
        lines.put(line.rstrip("\r\n"))
    lines.put(None)


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
