"""Translation front ends: an interactive shell for terminals, a line-by-line filter for pipes."""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path
from typing import TextIO

from s2s.inference import Translator

HISTORY = Path(os.environ.get("S2S_HISTORY", Path.home() / ".s2s_history"))


def interactive(translator: Translator, options: dict, out: TextIO = sys.stdout) -> None:
    """Prompt, translate, show the time; an empty line or Ctrl-D quits, Ctrl-C drops the current line."""
    try:
        import readline  # line editing and history where the platform has it
    except ImportError:
        readline = None
    if readline is not None and HISTORY.is_file():
        readline.read_history_file(HISTORY)
    print("s2s translate: type a sentence; an empty line or Ctrl-D quits.", file=out)
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
            if not line.strip():
                break
            started = time.perf_counter()
            results = translator.translate([line], **options)[0]
            for rank, result in enumerate(results):
                prefix = f"{rank + 1}. " if len(results) > 1 else ""
                print(f"{prefix}{result.text}", file=out)
            print(f"  ({time.perf_counter() - started:.2f} s)", file=out, flush=True)
    finally:
        if readline is not None:
            try:
                readline.write_history_file(HISTORY)
            except OSError:
                pass


def filter_lines(translator: Translator, source: TextIO, sink: TextIO, batch_size: int, options: dict) -> int:
    """One output line per input line, in order. Lines that are already waiting are translated together;
    a writer that sends one line and waits for its answer is answered at once. Returns the line count."""
    pending, count = [], 0
    while True:
        line = source.readline()
        if line:
            pending.append(line.rstrip("\r\n"))
        if pending and (not line or len(pending) >= batch_size or not more_waiting(source)):
            write_translations(translator, pending, sink, options)
            count += len(pending)
            pending = []
        if not line:
            return count


def write_translations(translator: Translator, lines: list[str], sink: TextIO, options: dict) -> None:
    """Blank lines stay blank; an n-best list is written as ``rank<TAB>score<TAB>text`` lines."""
    texts = [line for line in lines if line.strip()]
    results = iter(translator.translate(texts, **options)) if texts else iter(())
    for line in lines:
        if not line.strip():
            sink.write("\n")
            continue
        options_ = next(results)
        if len(options_) == 1:
            sink.write(options_[0].text + "\n")
        else:
            for rank, result in enumerate(options_):
                sink.write(f"{rank + 1}\t{result.hypothesis.normalized:.4f}\t{result.text}\n")
    sink.flush()


def more_waiting(source: TextIO) -> bool:
    try:
        ready, _, _ = select.select([source], [], [], 0)
        return bool(ready)
    except (OSError, ValueError, TypeError):  # not a real file (tests, Windows pipes): read on
        return True
