"""Translation: sentence pairs → SentencePiece → encoder–decoder; validation decodes and scores with sacreBLEU."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.config import TranslationRecipe
from s2s.data.batching import Batch, collate
from s2s.data.corpus import load_split
from s2s.errors import DataError
from s2s.inference import Translator
from s2s.metrics import score_corpus
from s2s.models import Seq2Seq, build_seq2seq
from s2s.tokenizer import TokenizerPair, train_tokenizers


@dataclass
class Corpus:
    """Token ids of one split, and its raw text (validation scores detokenised output against raw text)."""

    src: list[list[int]]
    tgt: list[list[int]]
    src_text: list[str]
    tgt_text: list[str]

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> list[int]:
        """What batching measures an example by: its longer side, with BOS or EOS."""
        return [max(len(s), len(t)) + 1 for s, t in zip(self.src, self.tgt, strict=True)]

    def batch(self, indices: list[int]) -> Batch:
        return collate([self.src[i] for i in indices], [self.tgt[i] for i in indices], indices)

    def iterate(self, batches: list[list[int]]) -> Iterator[Batch]:
        return map(self.batch, batches)

    def subset(self, rows: list[int]) -> Corpus:
        return Corpus(*([column[i] for i in rows] for column in (self.src, self.tgt, self.src_text, self.tgt_text)))


class TranslationPipeline:
    def __init__(self, recipe: TranslationRecipe):
        self.recipe = recipe
        self.tokenizers: TokenizerPair | None = None

    def read_splits(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The train and valid pairs; read before anything is written, so bad data leaves no run directory."""
        splits = load_split(self.recipe.data, "train"), load_split(self.recipe.data, "valid")
        for name, pairs in zip(("train", "valid"), splits, strict=True):
            if not pairs:
                raise DataError(f"data.{name}: the {name} split is empty")
        return splits

    def prepare(self, run_dir: Path, events, reuse: bool, splits) -> tuple[Corpus, Corpus]:
        """Train (or reuse) the tokenizer, encode the train and valid splits and filter the training pairs."""
        train_pairs, valid_pairs = splits
        tokenizer_dir = Path(run_dir) / "tokenizer"
        if reuse and tokenizer_dir.is_dir():
            self.tokenizers = TokenizerPair.load(tokenizer_dir)
        else:
            self.tokenizers = train_tokenizers(self.recipe.tokenizer, train_pairs, tokenizer_dir)
        train = self.encode(train_pairs)
        limit = self.recipe.data.max_length
        kept = [i for i in range(len(train)) if 0 < len(train.src[i]) <= limit and 0 < len(train.tgt[i]) <= limit]
        empty = sum(1 for s, t in zip(train.src, train.tgt, strict=True) if not s or not t)
        events.message(
            f"training pairs: {len(kept):,} kept, {empty:,} empty and "
            f"{len(train) - len(kept) - empty:,} over {limit} tokens dropped"
        )
        if not kept:
            raise DataError(
                f"data.train: no training pairs left after dropping empty ones and those over "
                f"data.max_length = {limit} tokens"
            )
        return train.subset(kept), self.encode(valid_pairs)

    def encode(self, pairs: list[tuple[str, str]]) -> Corpus:
        src_text, tgt_text = [s for s, _ in pairs], [t for _, t in pairs]
        return Corpus(self.tokenizers.src.encode(src_text), self.tokenizers.tgt.encode(tgt_text), src_text, tgt_text)

    def load_assets(self, run_dir: Path) -> None:
        self.tokenizers = TokenizerPair.load(Path(run_dir) / "tokenizer")

    def build_model(self) -> Seq2Seq:
        return build_seq2seq(self.recipe.model, self.tokenizers.src.vocab_size, self.tokenizers.tgt.vocab_size)

    def predictor(self, model: Seq2Seq, device: torch.device, dtype=None) -> Translator:
        return Translator(model, self.tokenizers, self.recipe.eval, device, dtype)

    def score(self, model: Seq2Seq, valid: Corpus, device: torch.device, dtype) -> dict:
        """BLEU, chrF and exact match of (the first ``eval.valid_sentences`` of) the valid split."""
        config = self.recipe.eval
        count = config.valid_sentences or len(valid)
        hypotheses = self.predictor(model, device, dtype).best(valid.src_text[:count], beam_size=config.valid_beam_size)
        scores = score_corpus(hypotheses, valid.tgt_text[:count])
        return {**{k: scores[k] for k in ("bleu", "chrf", "exact_match")}, "signature": scores["signature"]["bleu"]}
