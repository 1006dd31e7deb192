"""Helpers that more than one test file uses (a test file never imports another): add yours at the end."""

from __future__ import annotations

import gzip
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from s2s import kernels
from s2s.config import DecoderConfig, EncoderConfig, ModelConfig
from s2s.models import build_seq2seq
from s2s.modules.decoders import Memory, RNNDecoder
from s2s.train import Events

# --- the input-fed decoder on a small padded batch: tests/test_recurrence.py, tests/test_kernels.py ---
DECODER_LENGTHS = torch.tensor([5, 2, 4, 1])  # source lengths of the batch's 4 sentences, S = 5 positions


def input_fed_decoder(
    summary_size: int,
    attention: str = "bahdanau",
    vocab_size: int = 30,
    hidden_size: int = 16,
    context_gate: bool = False,
):
    """A one-layer input-fed GRU decoder (embeddings of 12, no dropout) over encoder states of ``summary_size``."""
    return RNNDecoder(
        vocab_size=vocab_size,
        embedding_size=12,
        hidden_size=hidden_size,
        layers=1,
        cell="gru",
        dropout=0.0,
        summary_size=summary_size,
        attention=attention,
        input_feeding=True,
        every_step=False,
        tie_embeddings=False,
        context_gate=context_gate,
    )


def decoder_and_inputs(attention: str, dtype=torch.float64):
    """A one-layer input-fed GRU decoder with ``attention`` (hidden size 16, 30 words), encoder states [4, 5, K]
    that want a gradient, and previous target ids [4, 6]. ``attention`` may end in ``+gate``: with a context gate."""
    torch.manual_seed(0)
    attention, _, gate = attention.partition("+")
    encoder_size = 16 if attention == "luong_dot" else 24
    decoder = input_fed_decoder(encoder_size, attention, context_gate=gate == "gate").to(dtype)
    states = torch.randn(len(DECODER_LENGTHS), 5, encoder_size, dtype=dtype, requires_grad=True)
    return decoder, states, torch.randint(4, 30, (len(DECODER_LENGTHS), 6))


def run(decoder, fast: bool, states: torch.Tensor, prev: torch.Tensor, dtype=None):
    """One training step of ``decoder`` over ``states`` (padded past ``DECODER_LENGTHS``) on the hand-written loop
    (``fast``) or the general autograd path, under autocast to ``dtype`` if given → logits, attention, the last
    state, the encoder states' gradient and every parameter's gradient."""
    decoder.fast_loop = fast
    decoder.zero_grad()
    states.grad = None
    mask = torch.arange(states.size(1))[None] < DECODER_LENGTHS[:, None]
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        values = states * mask[..., None]
        memory = Memory(values, decoder.attention.project_keys(values), mask, states[:, 0])
        logits, state, weights = decoder(prev, decoder.initial_state(memory), memory)
        # every output gets a gradient, the attention weights too (as the doubly stochastic penalty gives them)
        loss = logits.float().sin().sum() + state.hidden.float().sum() * 0.3 + weights.float().cos().sum() * 0.7
    loss.backward()
    grads = {name: p.grad.clone() for name, p in decoder.named_parameters() if p.grad is not None}
    return logits.detach().float(), weights.float(), state, states.grad.clone(), grads


# --- tests of the compiled CPU kernels: tests/test_kernels.py, tests/test_loss.py ---
def needs_kernels() -> None:
    """Build the kernels now, at run time (collecting a test file builds nothing), or skip saying why; under
    S2S_KERNELS=require a failed build raises, so the test fails instead."""
    if not kernels.available():
        pytest.skip(f"the CPU kernels are not in use here: {kernels.reason()}")


# --- tiny recipes and data every test file may use ---
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY = {
    "name": "tiny",
    "data": {
        "format": "generated",
        "generator": {"train_size": 3000, "valid_size": 64, "test_size": 64, "seed": 3},
        "max_length": 40,
    },
    "tokenizer": {"type": "unigram", "vocab_size": 120},
    "model": {
        "encoder": {"embedding_size": 32, "hidden_size": 32, "dropout": 0.0},
        "decoder": {
            "embedding_size": 32,
            "hidden_size": 32,
            "dropout": 0.0,
            "attention": "bahdanau",
            "input_feeding": True,
        },
    },
    "train": {
        "lr": 0.005,
        "batch_size": 32,
        "max_steps": 40,
        "validate_every": 20,
        "log_every": 10,
        "label_smoothing": 0.0,
        "threads": 1,
    },
    "eval": {"batch_size": 16},
}


POSITIVE, NEGATIVE = ("good", "great", "lovely", "fine"), ("bad", "awful", "dull", "poor")
FILLER = ("the", "film", "was", "plot", "acting", "very", "a", "story", "and", "quite")


def toy_reviews(count: int, seed: int) -> list[tuple[str, str]]:
    """(text, label) rows whose label is told by one sentiment word among filler: learnable in seconds."""

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(("pos", "neg"))
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return path


def toy_sentiment_recipe(directory: Path) -> dict:
    """A classification recipe over toy reviews written into ``directory``."""
    files = {
        name: write_tsv(directory / f"{name}.tsv", toy_reviews(size, seed))
        for name, size, seed in (("train", 1500, 1), ("valid", 100, 2), ("test", 100, 3))
    }
    return {
        "task": "classification",
        "name": "toy-sentiment",
        "data": {"format": "tsv", **{name: {"path": str(path)} for name, path in files.items()}, "max_length": 12},
        "tokenizer": {"vocab_size": 40},
        "model": {
            "encoder": {"cell": "gru", "embedding_size": 16, "hidden_size": 16, "dropout": 0.0},
            "head": {"pooling": "max", "dropout": 0.0},
        },
        "train": {"lr": 0.01, "batch_size": 32, "max_steps": 60, "validate_every": 30, "log_every": 10, "threads": 1},
        "eval": {"batch_size": 64},
    }


def write_recipe(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


SHAPES_RUN = {
    "task": "captioning",
    "name": "tiny-shapes",
    "data": {
        "format": "generated",
        "generator": {"train_size": 200, "valid_size": 16, "test_size": 16, "image_size": 32, "seed": 2},
        "image_size": 32,
        "workers": 0,
    },
    "tokenizer": {"vocab_size": 30},
    "model": {
        "encoder": {"channels": [8, 16], "output_size": 16, "dropout": 0.0},
        "decoder": {"embedding_size": 16, "hidden_size": 16, "dropout": 0.0},
    },
    "train": {"batch_size": 16, "max_steps": 12, "validate_every": 6, "log_every": 6, "threads": 1},
    "eval": {"max_length": 10, "batch_size": 8},
}

PRETRAINED_CAPTIONING = {  # a small captioning recipe on the pretrained backbone, whose weights are a package
    "task": "captioning",
    "data": {"format": "generated", "generator": {"train_size": 8, "valid_size": 4, "image_size": 32}},
    "model": {"encoder": {"backbone": "efficientnet_lite0"}},
}


class Messages(Events):
    def __init__(self):
        self.texts = []

    def message(self, text):
        self.texts.append(text)


# --- the s2s command as a user meets it: a subprocess through the real entry point ---
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
S2S = [sys.executable, "-m", "s2s"]
ENTRY_POINTS = {"script": ["s2s"], "module": S2S}


def s2s(*args, cwd: Path | None = None, entry: list[str] = S2S, stdin: str = "") -> subprocess.CompletedProcess:
    """Run ``s2s ARGS`` with stdin a pipe (empty unless given), so that nothing ever waits on a terminal."""
    return subprocess.run(
        [*entry, *map(str, args)], input=stdin, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300
    )


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def assert_user_error(result: subprocess.CompletedProcess, exit_code: int, message: str) -> None:
    """Exit ``exit_code``; stderr is exactly the one line ``s2s: error: MESSAGE``; nothing on stdout."""
    assert_no_traceback(result)
    assert result.returncode == exit_code, result.stderr
    assert result.stderr == f"s2s: error: {message}\n"
    assert result.stdout == ""


def flat(text: str) -> str:
    """Rich draws usage errors in a box that may wrap: drop the frame and join the words again."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# --- a small translation model: tests/test_models.py, tests/test_search.py ---
VOCAB = 23
SENTENCES = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
TARGETS = [[4, 5, 6], [7, 8, 9, 10, 11], [12]]


def small_model(
    cell="gru",
    bidirectional=True,
    layers=1,
    attention="bahdanau",
    input_feeding=True,
    reverse=False,
    conditioning="init",
    dec_layers=1,
    seed=0,
):
    torch.manual_seed(seed)
    config = ModelConfig(
        encoder=EncoderConfig(
            cell=cell,
            embedding_size=8,
            hidden_size=6,
            layers=layers,
            bidirectional=bidirectional,
            dropout=0.0,
            reverse_source=reverse,
        ),
        decoder=DecoderConfig(
            cell=cell,
            embedding_size=8,
            hidden_size=12 if bidirectional else 6,
            layers=dec_layers,
            dropout=0.0,
            attention=attention,
            input_feeding=input_feeding and attention != "none",
            conditioning=conditioning,
        ),
    )
    return build_seq2seq(config, VOCAB, VOCAB).eval()


# --- a generated tagging task: tests/unit/test_tagging.py, tests/e2e/test_tag_commands.py ---
LEXICON = {
    "DET": ["the", "a", "every", "this"],
    "ADJ": ["big", "red", "old", "small", "green", "happy"],
    "NOUN": ["cat", "dog", "man", "apple", "car", "house", "bird"],
    "VERB": ["sees", "likes", "eats", "finds", "takes"],
}
ADVERB_STEMS = ["quick", "slow", "loud", "soft", "bright", "sad", "glad", "rough", "calm", "neat", "warm", "kind"]


def tagged_sentences(count: int, seed: int, adverbs: list[str]) -> list[list[tuple[str, str]]]:
    """DET (ADJ) NOUN (ADV) VERB DET NOUN PUNCT sentences; adverbs are the ``-ly`` words given, so a test can hold
    some out of training and ask the tagger to know them by their spelling."""
    import random

    rng = random.Random(seed)
    pick = lambda tag: (rng.choice(LEXICON[tag]), tag)  # noqa: E731
    sentences = []
    for _ in range(count):
        words = [pick("DET")] + ([pick("ADJ")] if rng.random() < 0.5 else []) + [pick("NOUN")]
        words += [(rng.choice(adverbs), "ADV")] if rng.random() < 0.5 else []
        sentences.append(words + [pick("VERB"), pick("DET"), pick("NOUN"), (".", "PUNCT")])
    return sentences


def write_word_tags(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    """word<TAB>tag lines, a blank line after each sentence."""
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in sentences), encoding="utf-8")
    return path


def toy_tagging_recipe(directory: Path) -> dict:
    """A tagging recipe over generated sentences whose valid and test adverbs never occur in training."""
    seen = [stem + "ly" for stem in ADVERB_STEMS[:8]]
    unseen = [stem + "ly" for stem in ADVERB_STEMS[8:]]
    files = {
        name: write_word_tags(directory / f"{name}.tsv", tagged_sentences(size, seed, adverbs))
        for name, size, seed, adverbs in (("train", 600, 1, seen), ("valid", 60, 2, unseen), ("test", 60, 3, unseen))
    }
    return {
        "task": "tagging",
        "name": "toy-tagging",
        "data": {"format": "tsv", **{name: {"path": str(path)} for name, path in files.items()}},
        "model": {
            "characters": {"embedding_size": 12, "hidden_size": 16},
            "encoder": {"embedding_size": 16, "hidden_size": 24, "dropout": 0.0, "word_dropout": 0.2},
            "head": {"dropout": 0.0},
        },
        "train": {"lr": 0.01, "batch_size": 32, "max_steps": 120, "validate_every": 60, "log_every": 20, "threads": 1},
        "eval": {"batch_size": 64},
    }


# --- tagged sentences: tests/unit/test_tagged_data.py, tests/e2e/test_tag_baseline.py ---
def write_text(path: Path, text: str) -> Path:
    """``text`` as UTF-8, gzip-compressed if the name ends in .gz."""
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def tagged_tsv(sentences: list[list[tuple[str, str]]]) -> str:
    """``word<TAB>tag`` lines, a blank line after each sentence."""
    return "".join("".join(f"{word}\t{tag}\n" for word, tag in sentence) + "\n" for sentence in sentences)


def conllu_text(sentences: list[list[str]]) -> str:
    """A CoNLL-U file: each sentence's lines (comments as they are; word lines with their ten columns written
    between single spaces, turned into tabs), a blank line after each sentence."""

    def line(text: str) -> str:
        return text if text.startswith("#") else "\t".join(text.split())

    return "".join("".join(f"{line(text)}\n" for text in sentence) + "\n" for sentence in sentences)


def shell_answer(command: str, run: Path, line: str, history: Path) -> str:
    """Type ``line`` into ``s2s COMMAND --model RUN`` on a real terminal; return the answer's first line, after
    checking the shell's greeting, its prompt, and that an empty line ends it with exit status 0."""
    import pexpect

    env = {**os.environ, "OMP_NUM_THREADS": "1", "S2S_HISTORY": str(history), "TERM": "dumb"}
    child = pexpect.spawn("s2s", [command, "--model", str(run)], env=env, encoding="utf-8", timeout=60)
    try:
        child.expect_exact(f"s2s {command}: type a sentence")
        child.expect_exact("> ")
        child.sendline(line)
        child.expect(r"\(\d+\.\d\d s\)")
        answer = child.before.split("\r\n")[1]
        child.expect_exact("> ")
        child.sendline("")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    return answer


# --- a toy play and a language model of it: tests/unit/test_language_model.py, tests/e2e/test_generate_commands.py ---
SPEAKERS = ("ROMEO", "JULIET", "NURSE")
VERSES = ("what light through yonder window breaks", "good night, good night", "parting is such sweet sorrow")


def toy_play(count: int, seed: int) -> str:
    """``count`` speeches: a speaker's name and a colon on a line, a verse on the next, a blank line after."""
    rng = random.Random(seed)
    return "".join(f"{rng.choice(SPEAKERS)}:\n{rng.choice(VERSES)}.\n\n" for _ in range(count))


def toy_language_model_recipe(directory: Path) -> dict:
    """A character-level GRU language model of a toy play (its last tenth validates), trained in a few seconds."""
    text = write_text(directory / "play.txt.gz", toy_play(300, 1))
    return {
        "task": "language_model",
        "name": "toy-play",
        "data": {"format": "stream", "train": {"path": str(text)}, "valid_tail": 0.1},
        "model": {"embedding_size": 32, "hidden_size": 32, "layers": 2, "dropout": 0.0},
        "train": {"lr": 0.01, "batch_size": 8, "bptt": 32, "max_steps": 150, "validate_every": 75, "threads": 1},
        "eval": {"generate": {"max_length": 60}},
    }
