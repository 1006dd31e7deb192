"""Tokenizers: trained from the training split when a run starts, saved in the run directory. Two kinds, one
interface (``vocab_size``, ``encode``, ``decode``, ``pieces``, ``unknown``): SentencePiece models (``tokenizer.type``
unigram or bpe, saved as NAME.model) and character vocabularies (``tokenizer.type: char``, saved as NAME.chars, a
JSON list), which any task can use.

Special ids are fixed for every model s2s trains, so that models, search and batching can rely on them:
pad = 0, unk = 1, bos = 2, eos = 3.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import sentencepiece as spm

from s2s.config import TextTokenizerConfig, TokenizerConfig
from s2s.errors import RecipeError, RunError

PAD, UNK, BOS, EOS = 0, 1, 2, 3


class Tokenizer(Protocol):
    """Text ↔ ids for one language (or both, for a joint model)."""

    @property
    def vocab_size(self) -> int: ...
    def encode(self, texts: list[str]) -> list[list[int]]: ...
    def decode(self, ids: list[list[int]]) -> list[str]: ...  # special ids left out, stopping at the first eos
    def pieces(self, ids: list[int]) -> list[str]: ...
    def unknown(self, texts: list[str]) -> Counter: ...  # the characters of ``texts`` read as unk, with counts


class PieceTokenizer:
    """A SentencePiece model."""

    def __init__(self, model_file: Path):
        self.model_file = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def sample(self, texts: list[str], alpha: float, seed: int) -> list[list[int]]:
        """Sampled segmentations (subword regularisation; BPE: merges dropped with probability ``alpha``); the
        same for the same ``seed`` within one process (SentencePiece's draws for a seed differ between processes)."""
        spm.set_random_generator_seed(seed)  # one thread: SentencePiece's threads would draw in any order
        return self.sp.encode(texts, enable_sampling=True, alpha=alpha, nbest_size=-1, num_threads=1)

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Detokenised text; ids after the first eos and special ids are left out."""
        return self.sp.decode([strip_special(seq) for seq in ids])

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]

    def unknown(self, texts: list[str]) -> Counter:
        counts = Counter(char for text in texts for char in text if not char.isspace())
        return Counter({char: n for char, n in counts.items() if UNK in self.sp.encode(char)})


class CharTokenizer:
    """One id per character seen in training (after the four special ids); any other character is unk."""

    SUFFIX = ".chars"

    def __init__(self, chars: list[str]):
        self.chars = chars
        self.ids = {char: i for i, char in enumerate(chars, start=len(SPECIAL_PIECES))}

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_PIECES) + len(self.chars)

    def encode(self, texts: list[str]) -> list[list[int]]:
        ids = self.ids
        return [[ids.get(char, UNK) for char in text] for text in texts]

    def decode(self, ids: list[list[int]]) -> list[str]:
        first = len(SPECIAL_PIECES)
        return ["".join(self.chars[i - first] if i >= first else "" for i in strip_special(seq)) for seq in ids]

    def pieces(self, ids: list[int]) -> list[str]:
        first = len(SPECIAL_PIECES)
        return [self.chars[i - first] if i >= first else SPECIAL_PIECES[i] for i in ids]

    def unknown(self, texts: list[str]) -> Counter:
        return Counter(char for text in texts for char in text if char not in self.ids)

    @classmethod
    def of(cls, config: TextTokenizerConfig, texts: Iterable[str]) -> CharTokenizer:
        """The characters of ``texts``, most frequent first: as many as cover ``character_coverage`` of all
        character occurrences, and at most ``vocab_size`` ids in all."""
        counts = Counter(char for text in texts for char in text)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        total, covered, chars = sum(counts.values()), 0, []
        for char, count in ranked[: config.vocab_size - len(SPECIAL_PIECES)]:
            if chars and covered >= config.character_coverage * total:
                break
            chars.append(char)
            covered += count
        return cls(chars)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.chars, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CharTokenizer:
        try:
            chars = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunError(f"{path}: cannot read the character vocabulary ({error})") from None
        if not (isinstance(chars, list) and all(isinstance(c, str) and len(c) == 1 for c in chars)):
            raise RunError(f"{path}: not a character vocabulary (a JSON list of single characters)")
        return cls(chars)


SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")  # ids PAD, UNK, BOS, EOS


def load_tokenizer(prefix: Path) -> Tokenizer | None:
    """The tokenizer saved as ``prefix``.model (SentencePiece) or ``prefix``.chars; None if neither is there."""
    prefix = Path(prefix)
    if prefix.with_suffix(".model").is_file():
        return PieceTokenizer(prefix.with_suffix(".model"))
    if prefix.with_suffix(CharTokenizer.SUFFIX).is_file():
        return CharTokenizer.load(prefix.with_suffix(CharTokenizer.SUFFIX))
    return None


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
        joint = load_tokenizer(directory / "joint")
        if joint is not None:
            return cls(joint, joint)
        src, tgt = load_tokenizer(directory / "src"), load_tokenizer(directory / "tgt")
        if src is not None and tgt is not None:
            return cls(src, tgt)
        raise RunError(f"{directory}: no tokenizer (joint.model or .chars, or src and tgt ones)")


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
    return load_text_tokenizer(directory)


def load_text_tokenizer(directory: Path) -> Tokenizer:
    tokenizer = load_tokenizer(Path(directory) / "text")
    if tokenizer is None:
        raise RunError(f"{directory}: no tokenizer (text.model or text.chars)")
    return tokenizer


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
    if config.type == "char":
        CharTokenizer.of(config, sentences).save(prefix.with_suffix(CharTokenizer.SUFFIX))
        return
    try:
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
    except RuntimeError as error:  # SentencePiece refuses settings the text cannot meet: say which key
        raise RecipeError(sentencepiece_refusal(str(error), config)) from None


def sentencepiece_refusal(message: str, config: TextTokenizerConfig) -> str:
    """SentencePiece's error as a recipe error naming the key to change."""
    short = message.strip().splitlines()[-1] if message.strip() else message
    needed = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if needed:
        return (
            f"tokenizer.vocab_size: {config.vocab_size} is too small for the {needed.group(2)} characters (and special "
            "pieces) of the training text; raise it, or lower tokenizer.character_coverage"
        )
    return f"tokenizer: SentencePiece cannot train with these settings: {short}"
