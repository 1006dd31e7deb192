"""SentencePiece tokenizers: trained from the training split when a run starts, saved in the run directory.

Special ids are fixed for every model s2s trains, so that models, search and batching can rely on them:
pad = 0, unk = 1, bos = 2, eos = 3.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from s2s.config import TextTokenizerConfig, TokenizerConfig
from s2s.errors import RunError

PAD, UNK, BOS, EOS = 0, 1, 2, 3


class Tokenizer:
    """Text ↔ ids for one language (or both, for a joint model)."""

    def __init__(self, model_file: Path):
        self.model_file = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Detokenised text; ids after the first eos and special ids are left out."""
        return self.sp.decode([strip_special(seq) for seq in ids])

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]


def strip_special(ids: list[int]) -> list[int]:
    out = []
    for i in ids:
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(i)
    return out


class TokenizerPair:
    """Source and target tokenizers; the same object twice when the recipe asks for a joint model."""

    def __init__(self, src: Tokenizer, tgt: Tokenizer):
        self.src, self.tgt = src, tgt

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    @classmethod
    def load(cls, directory: Path) -> TokenizerPair:
        directory = Path(directory)
        if (directory / "joint.model").is_file():
            joint = Tokenizer(directory / "joint.model")
            return cls(joint, joint)
        if (directory / "src.model").is_file() and (directory / "tgt.model").is_file():
            return cls(Tokenizer(directory / "src.model"), Tokenizer(directory / "tgt.model"))
        raise RunError(f"{directory}: no SentencePiece model (joint.model, or src.model and tgt.model)")


def train_tokenizers(config: TokenizerConfig, pairs: list[tuple[str, str]], directory: Path) -> TokenizerPair:
    """Train on the training pairs and save into ``directory`` (written complete, or not at all)."""

    def fill(staging: Path) -> None:
        if config.joint:
            train_one(config, [s for s, _ in pairs] + [t for _, t in pairs], staging / "joint")
        else:
            train_one(config, [s for s, _ in pairs], staging / "src")
            train_one(config, [t for _, t in pairs], staging / "tgt")

    staged(directory, fill)
    return TokenizerPair.load(directory)


def train_text_tokenizer(config: TextTokenizerConfig, texts: list[str], directory: Path) -> Tokenizer:
    """One tokenizer for one kind of text (classified texts, captions), saved as ``directory/text.model``."""
    staged(directory, lambda staging: train_one(config, texts, staging / "text"))
    return Tokenizer(Path(directory) / "text.model")


def load_text_tokenizer(directory: Path) -> Tokenizer:
    model = Path(directory) / "text.model"
    if not model.is_file():
        raise RunError(f"{directory}: no SentencePiece model (text.model)")
    return Tokenizer(model)


def staged(directory: Path, fill) -> None:
    """Let ``fill`` write into a fresh folder beside ``directory``, then put it in place whole."""
    directory = Path(directory)
    staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=directory.parent))
    try:
        fill(staging)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def train_one(config: TextTokenizerConfig, sentences: Iterable[str], prefix: Path) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([s for s in sentences if s.strip()]),
        model_prefix=str(prefix),
        model_type=config.type,
        vocab_size=config.vocab_size,
        character_coverage=config.character_coverage,
        hard_vocab_limit=False,  # a small corpus gets the vocabulary it supports, not an error
        split_digits=True,  # numbers are copied digit by digit, which generalises to unseen numbers
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        num_threads=2,
        minloglevel=2,
    )
