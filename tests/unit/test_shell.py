"""The filter under ``s2s translate`` on a pipe, in-process: lines already waiting are translated together, in
batches, and come out in order."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from s2s.shell import filter_lines, translation_blocks


class RecordingTranslator:
    """Stands in for a model: upper-cases each sentence and records how many sentences each call got."""

    def __init__(self):
        self.batches: list[int] = []

    def translate(self, sentences, **options):
        self.batches.append(len(sentences))
        return [[SimpleNamespace(text=sentence.upper())] for sentence in sentences]


@pytest.mark.parametrize(
    "writer_keeps_pipe_open",
    [
        pytest.param(False, id="writer-has-closed-the-pipe"),
        pytest.param(True, id="writer-keeps-the-pipe-open"),
    ],
)
def test_lines_already_waiting_on_a_pipe_are_translated_together(writer_keeps_pipe_open):
    lines = [f"sentence {i}" for i in range(40)]
    read_end, write_end = os.pipe()
    os.write(write_end, "".join(line + "\n" for line in lines).encode())
    if writer_keeps_pipe_open:  # as a program that sends a batch and waits for the answers does
        closer = threading.Timer(0.5, os.close, [write_end])
        closer.start()
    else:
        os.close(write_end)
    translator, sink = RecordingTranslator(), io.StringIO()
    with open(read_end, encoding="utf-8") as source:
        count = filter_lines(lambda lines: translation_blocks(translator, lines, {}), source, sink, batch_size=16)
    assert count == 40
    assert sink.getvalue() == "".join(line.upper() + "\n" for line in lines)
    assert sum(translator.batches) == 40 and max(translator.batches) <= 16
    assert len(translator.batches) <= 4, f"40 waiting lines were translated in batches of {translator.batches}"


def test_an_error_while_the_writer_keeps_the_pipe_open_ends_the_process_cleanly():
    """The reading thread may be waiting for the next line when an answer fails: the process must still exit with
    its own status, not abort at shutdown over the lock of stdin."""
    program = (
        "import sys\n"
        "from s2s.shell import filter_lines\n"
        "def fail(lines): raise RuntimeError('no answer')\n"
        "try:\n"
        "    filter_lines(fail, sys.stdin.buffer, sys.stdout, 16)\n"
        "except RuntimeError:\n"
        "    sys.exit(2)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdin.write(b"first line\n")
    process.stdin.flush()  # and the pipe stays open while the process ends
    try:
        assert process.wait(timeout=60) == 2, process.stderr.read().decode()
    finally:
        process.stdin.close()
