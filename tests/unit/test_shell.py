"""The filter under ``s2s translate`` on a pipe, in-process: lines already waiting are translated together, in
batches, and come out in order."""

from __future__ import annotations

import io
import os
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
