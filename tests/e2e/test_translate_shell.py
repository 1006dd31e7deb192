"""``s2s translate``: a filter on a pipe, files with --input/--output, an interactive shell on a terminal.

Everything runs through the real entry point. Expected translations come from the same run loaded in this
process, one sentence at a time, so "in order" means: output line i is the translation of input line i.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import torch

from s2s.data.batching import collate
from s2s.data.generated import written_forms
from s2s.search import max_lengths
from s2s.tokenizer import BOS, EOS

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
S2S = [sys.executable, "-m", "s2s"]
TIMEOUT = 120  # seconds; generous, since a start imports torch on a busy machine

SENTENCE = "March 3, 2021"
TIMING = r"\(\d+\.\d+ s\)"


def translate(*args, stdin: str = "") -> subprocess.CompletedProcess:
    """``s2s translate ARGS`` with stdin a pipe that carries ``stdin``."""
    return subprocess.run(
        [*S2S, "translate", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def expected(translator):
    """The filter's output for some input text: each line translated alone; blank lines stay blank."""

    def output_for(text: str) -> str:
        lines = text.splitlines()
        return "".join((translator.best([line])[0] if line.strip() else "") + "\n" for line in lines)

    return output_for


@pytest.fixture(scope="module")
def assert_translations(translator, expected):
    """Check that ``output`` has one line per line of ``text``, blank where it is blank, each the translation of its
    own input line: the one it gets alone, or one that greedy search could have given it had a near-tie gone the
    other way. The filter decodes lines in batches, and a batch's arithmetic differs from one sentence's in the last
    bits (how much depends on the CPU's matrix kernels), so a barely trained model's near-ties may go either way."""

    def check(text: str, output: str) -> None:
        assert translator.config.beam_size == 1, "the near-tie rule below is greedy search's"
        lines, answers = text.splitlines(), output.split("\n")
        assert answers.pop() == "" and len(answers) == len(lines), output
        for line, answer, alone in zip(lines, answers, expected(text).splitlines(), strict=True):
            assert answer == alone or (line.strip() and greedy_up_to_rounding(translator, line, answer)), (line, answer)

    return check


def greedy_up_to_rounding(translator, line: str, answer: str, slack: float = 1e-3) -> bool:
    """Whether every token of ``answer`` (re-tokenised) and its EOS is within ``slack`` nats of the most probable one
    at its step, given ``line``: what greedy search may output when near-ties go either way."""
    model, tokenizers = translator.model.eval(), translator.tokenizers
    batch = collate(tokenizers.src.encode([line]), None, [0])
    limit = int(max_lengths(batch.src_lengths, translator.config.max_length_ratio)[0])
    target = tokenizers.tgt.encode([answer])[0]
    if tokenizers.tgt.decode([target])[0] != answer or len(target) > limit - 1:
        return False
    with torch.no_grad():
        memory = model.encode(batch.src, batch.src_lengths)
        state, prev = model.initial_state(memory), torch.tensor([BOS])
        forced = len(target) == limit - 1  # the output reached the length limit, where search forces EOS
        for token in target if forced else [*target, EOS]:
            logits, state, _ = model.step(prev, state, memory)
            log_probs = logits.float().log_softmax(-1)[0]
            if float(log_probs.max() - log_probs[token]) > slack:
                return False
            prev = torch.tensor([token])
    return True


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def leftovers(directory: Path, name: str) -> list[Path]:
    """Temporary files an atomic write of ``name`` would leave behind if it did not clean up."""
    return sorted(directory.glob(f".{name}.*"))


# ---------------------------------------------------------------- a filter on a pipe


# 30 distinct sentences: more than the tiny run's eval.batch_size (16), so they span several batches
MANY_DATES = [form for day in (1, 12, 23) for form in written_forms(dt.date(2019 + day % 3, day % 12 + 1, day))]

PIPE_INPUTS = [
    pytest.param(
        "\n" + SENTENCE + "\n\n   \n2021-03-03\n\n",
        id="blank-and-whitespace-only-lines-stay-blank",
    ),
    pytest.param(SENTENCE + "\r\n03.03.2021\r\n2021-03-03", id="crlf-line-ends-and-no-final-newline"),
    pytest.param(
        "".join(line + ("\n\n" if i % 7 == 3 else "\n") for i, line in enumerate(MANY_DATES)),
        id="more-lines-than-one-decoding-batch",
    ),
]


@pytest.mark.parametrize("text", PIPE_INPUTS)
def test_a_pipe_gets_one_line_out_per_line_in_in_order(text, trained_run, assert_translations):
    result = translate("--model", trained_run, stdin=text)
    assert_ok(result)
    assert_translations(text, result.stdout)
    assert len(result.stdout.splitlines()) == len(text.splitlines())


def test_a_writer_that_waits_for_each_answer_gets_it_before_closing_the_pipe(trained_run, expected):
    child = subprocess.Popen(
        [*S2S, "translate", "--model", str(trained_run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        for sentence in (SENTENCE, "", "03.03.2021"):
            child.stdin.write(sentence + "\n")
            child.stdin.flush()
            ready, _, _ = select.select([child.stdout], [], [], TIMEOUT)
            assert ready, f"no answer to {sentence!r} while the pipe is still open"
            assert child.stdout.readline() == expected(sentence + "\n")
        child.stdin.close()
        assert child.wait(TIMEOUT) == 0
        assert child.stdout.read() == ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            stream.close()


def test_nbest_lines_are_rank_score_text_best_first(trained_run, translator):
    text = f"{SENTENCE}\n\n03.03.2021\n"
    result = translate("--model", trained_run, "--nbest", "2", stdin=text)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and lines[2] == ""
    for sentence, block in ((SENTENCE, lines[0:2]), ("03.03.2021", lines[3:5])):
        fields = [line.split("\t") for line in block]
        assert [rank for rank, _, _ in fields] == ["1", "2"]
        assert all(re.fullmatch(r"-?\d+\.\d{4}", score) for _, score, _ in fields)
        assert float(fields[0][1]) >= float(fields[1][1])
        options = translator.translate([sentence], beam_size=2, nbest=2)[0]
        assert [text for _, _, text in fields] == [option.text for option in options]


# ---------------------------------------------------------------- --input and --output


@pytest.mark.parametrize("from_file", [True, False], ids=["input-file-to-output-file", "stdin-to-output-file"])
def test_output_file_holds_the_translations_and_stdout_stays_empty(from_file, trained_run, expected, tmp_path):
    text = f"{SENTENCE}\n\n2021-03-03\n03.03.2021\n"
    source, target = tmp_path / "in.txt", tmp_path / "out" / "translations.txt"
    source.write_text(text, encoding="utf-8")
    args = ["--model", trained_run, "--output", target, *(["--input", source] if from_file else [])]
    result = translate(*args, stdin="" if from_file else text)
    assert_ok(result)
    assert result.stdout == ""
    assert target.read_text(encoding="utf-8") == expected(text)
    assert leftovers(target.parent, target.name) == []


FAILURES = [
    pytest.param(
        lambda tmp, run: ["--model", run, "--input", tmp / "missing.txt"],
        1,
        "{tmp}/missing.txt: file not found",
        id="input-file-missing",
    ),
    pytest.param(
        lambda tmp, run: ["--model", tmp / "no-such-run", "--input", utf8_file(tmp)],
        2,
        "{tmp}/no-such-run: no such run directory",
        id="model-not-a-run",
    ),
]


def utf8_file(tmp: Path) -> Path:
    (tmp / "in.txt").write_text(f"{SENTENCE}\n", encoding="utf-8")
    return tmp / "in.txt"


@pytest.mark.parametrize(("args", "exit_code", "message"), FAILURES)
def test_a_failed_translation_writes_no_output_file(args, exit_code, message, trained_run, tmp_path):
    target = tmp_path / "translations.txt"
    result = translate(*args(tmp_path, trained_run), "--output", target)
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == f"s2s: error: {message.format(tmp=tmp_path)}\n"
    assert result.stdout == ""
    assert not target.exists()
    assert leftovers(tmp_path, target.name) == []


# ---------------------------------------------------------------- the interactive shell


def interruptible() -> None:
    """Ctrl-C as a terminal session has it: a suite started in the background inherits SIGINT ignored, and a program
    started with SIGINT ignored rightly keeps ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def shell(trained_run, tmp_path):
    """``s2s translate --model RUN`` on a real terminal, at its first prompt."""
    env = {**ENV, "S2S_HISTORY": str(tmp_path / "history"), "TERM": "dumb"}
    child = pexpect.spawn(
        "s2s",
        ["translate", "--model", str(trained_run)],
        env=env,
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(24, 200),
        preexec_fn=interruptible,
    )
    try:
        child.expect_exact("type a sentence")
        child.expect_exact("> ")
        yield child
    finally:
        child.close(force=True)


def answer_lines(child: pexpect.spawn) -> list[str]:
    """Wait for the time of an answer; the whole lines before it: the echoed input, then the answer."""
    child.expect(TIMING)
    *lines, indent = child.before.split("\r\n")
    assert indent.strip() == ""
    return lines


def assert_exits(child: pexpect.spawn, status: int) -> None:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == status
    assert child.signalstatus is None
    assert "Traceback" not in child.before


def test_shell_prompts_and_answers_each_sentence_with_its_time_until_an_empty_line_quits(shell, translator):
    for sentence in (SENTENCE, "03.03.2021"):
        shell.sendline(sentence)
        assert answer_lines(shell) == [sentence, translator.best([sentence])[0]]
        shell.expect_exact("> ")
    shell.sendline("")
    assert_exits(shell, 0)


def test_shell_ctrl_c_drops_the_line_and_keeps_the_shell_running(shell, translator, tmp_path):
    shell.send("half a sentence")
    shell.expect_exact("half a sentence")  # typed and echoed, as a person sees it before pressing Ctrl-C
    shell.sendintr()
    shell.expect_exact("> ")
    shell.sendline(SENTENCE)
    assert answer_lines(shell) == [SENTENCE, translator.best([SENTENCE])[0]]
    shell.expect_exact("> ")
    shell.sendline("")
    assert_exits(shell, 0)
    history = (tmp_path / "history").read_text(encoding="utf-8")
    assert SENTENCE in history
    assert "half a sentence" not in history


def test_shell_quits_with_status_0_on_ctrl_d(shell):
    shell.sendeof()
    assert_exits(shell, 0)


@pytest.mark.parametrize("to_file", [False, True], ids=["pipe", "output-file"])
def test_input_that_is_not_utf8_is_one_error_line_naming_the_input_line(to_file, trained_run, tmp_path):
    target = tmp_path / "out.txt"
    result = subprocess.run(
        [*S2S, "translate", "--model", str(trained_run), *(["--output", str(target)] if to_file else [])],
        input=b"March 3, 2021\n\xff\xfe broken\n",
        capture_output=True,
        env=ENV,
        timeout=300,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "Traceback" not in stderr
    assert stderr.startswith("s2s: error: <stdin>:2: not valid UTF-8") and stderr.count("\n") == 1
    assert not target.exists()
