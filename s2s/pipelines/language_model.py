"""Language models (one-to-many with nothing to condition on): a text → a model of its next token, scored in nats
per token, bits per character and perplexity, and used to generate (``s2s generate``).

A stream (``data.format: stream``) is cut into ``train.batch_size`` parallel streams, read in segments of
``train.bptt`` tokens, each segment starting from the state the last one ended in (truncated backpropagation through
time, as char-rnn and PyTorch's word_language_model train). Validation reads the whole valid text as one stream
with the state carried throughout, so its loss is the true per-token loss of the text. Documents (``lines``,
``files``) are read one per row from a zero state, batched by length.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from s2s.config import LanguageModelRecipe, TextLines, TextStream
from s2s.data.batching import ByLength, Carry, TextBatch, pad
from s2s.data.text import load_documents, read_text
from s2s.errors import DataError
from s2s.inference import TextGenerator
from s2s.models import LanguageModel
from s2s.pipelines import EvalSource, Evaluation, validation_loss
from s2s.search import Sampling
from s2s.tokenizer import BOS, EOS, Tokenizer, load_text_tokenizer, train_text_tokenizer


class Streams:
    """A text as ``streams`` parallel rows read in segments of ``bptt`` tokens: example j·S + s is segment j of
    stream s, and an epoch's batches are the segments in order, each with every stream, so that each segment goes
    on from the state its streams' previous segment left in ``carry``. The tokens that do not fill the last
    position of every stream (fewer than ``streams``) are left out."""

    def __init__(self, ids: list[int], streams: int, bptt: int, n_chars: int):
        length = len(ids) // streams
        if length == 0:
            raise DataError(f"{len(ids):,} tokens cannot fill {streams} streams; lower train.batch_size")
        used = length * streams
        self.targets = torch.tensor(ids[:used]).view(streams, length)
        self.inputs = torch.tensor([BOS, *ids[: used - 1]]).view(streams, length)  # the token before each target
        self.streams, self.bptt, self.carry = streams, bptt, Carry()
        self.segments = math.ceil(length / bptt)
        self.n_chars = round(n_chars * used / len(ids))  # the characters the scored tokens spell

    def __len__(self) -> int:
        return self.segments * self.streams

    def lengths(self) -> list[int]:
        width = self.targets.size(1)
        return [min(self.bptt, width - j * self.bptt) for j in range(self.segments) for _ in range(self.streams)]

    def batches(self, batch_size: int, by_tokens: bool, rng: random.Random | None) -> list[list[int]]:
        """Every segment in order, each a batch of all streams (the streams are the batch: ``batch_size`` and
        ``rng`` do not apply)."""
        return [[j * self.streams + s for s in range(self.streams)] for j in range(self.segments)]

    def batch(self, indices: list[int]) -> TextBatch:
        segment = indices[0] // self.streams
        rows = [i % self.streams for i in indices]
        span = slice(segment * self.bptt, (segment + 1) * self.bptt)
        return TextBatch(self.inputs[rows, span], self.targets[rows, span], indices, self.carry, segment == 0)

    def iterate(self, batches: list[list[int]]) -> Iterator[TextBatch]:
        return map(self.batch, batches)

    def state(self) -> dict:
        return {} if self.carry.hidden is None else {"carried": self.carry.hidden}

    def restore(self, state: dict) -> None:
        self.carry.hidden = state.get("carried")


class Documents(ByLength):
    """Documents read one per row, each from BOS to EOS."""

    def __init__(self, ids: list[list[int]], chars: list[int]):
        self.ids, self.chars = ids, chars  # chars: each document's characters scored (its end included)

    @property
    def n_chars(self) -> int:
        return sum(self.chars)

    def subset(self, rows: list[int]) -> Documents:
        return Documents([self.ids[i] for i in rows], [self.chars[i] for i in rows])

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(doc) + 1 for doc in self.ids]

    def batch(self, indices: list[int]) -> TextBatch:
        docs = [self.ids[i] for i in indices]
        return TextBatch(pad([[BOS, *doc] for doc in docs]), pad([[*doc, EOS] for doc in docs]), indices)

    def iterate(self, batches: list[list[int]]) -> Iterator[TextBatch]:
        return map(self.batch, batches)


class LanguageModelPipeline:
    UNIT = "samples"
    EVAL_FILES = ("text",)
    EVAL_OPTIONS = ()

    def __init__(self, recipe: LanguageModelRecipe):
        self.recipe = recipe
        self.streamed = isinstance(recipe.data, TextStream)

    def read_splits(self, events) -> tuple[list[str], list[str]]:
        splits = load_documents(self.recipe.data, "train"), load_documents(self.recipe.data, "valid")
        for name, documents in zip(("train", "valid"), splits, strict=True):
            if not any(documents):
                raise DataError(f"data.{name}: the {name} split has no text")
        return splits

    def prepare_assets(self, run_dir: Path, splits, events) -> Tokenizer:
        # SentencePiece trains on sentences of bounded length: lines of the documents, not whole documents
        lines = [line for doc in splits[0] for line in doc.splitlines()] if not self.streamed else splits[0]
        return train_text_tokenizer(self.recipe.tokenizer, lines, Path(run_dir) / "tokenizer")

    def load_assets(self, run_dir: Path) -> Tokenizer:
        return load_text_tokenizer(Path(run_dir) / "tokenizer")

    def examples(self, tokenizer: Tokenizer, splits, events):
        train, valid = splits
        for name, texts in (("train", train), ("valid", valid)):  # train: what the vocabulary's limits left out
            unknown = tokenizer.unknown(texts)
            if unknown:
                events.message(f"{name}: {sum(unknown.values()):,} characters read as unknown ({describe(unknown)})")
        if self.streamed:
            streams = self.streams(tokenizer, train[0], self.recipe.train.batch_size)
            events.message(
                f"{streams.targets.numel():,} training tokens ({tokenizer.vocab_size} ids) in {streams.streams} "
                f"streams, segments of {streams.bptt}"
            )
            return streams, self.streams(tokenizer, valid[0], 1)
        limit = self.recipe.data.max_length
        documents = self.documents(tokenizer, train)
        kept = [i for i, length in enumerate(documents.lengths()) if length <= limit]
        events.message(
            f"{len(kept):,} training documents; {len(documents) - len(kept):,} over data.max_length = {limit} "
            "tokens dropped"
        )
        return documents.subset(kept), self.documents(tokenizer, valid)

    def streams(self, tokenizer: Tokenizer, text: str, count: int) -> Streams:
        return Streams(tokenizer.encode([text])[0], count, self.recipe.train.bptt, len(text))

    @staticmethod
    def documents(tokenizer: Tokenizer, texts: list[str]) -> Documents:
        """Each document and its end: the characters scored are the document's and one for its end."""
        return Documents(tokenizer.encode(texts), [len(text) + 1 for text in texts])

    def build_model(self, tokenizer: Tokenizer) -> LanguageModel:
        return LanguageModel(tokenizer.vocab_size, self.recipe.model)

    def predictor(self, model: LanguageModel, tokenizer: Tokenizer, device: torch.device, dtype=None) -> TextGenerator:
        return TextGenerator(model, tokenizer, self.recipe.eval, device, dtype)

    def predict(self, generator: TextGenerator, valid, count: int | None, beam_size=None) -> list[str]:
        """``count`` greedy texts of ``eval.generate.max_length`` tokens from an empty prompt, side by side
        (``beam_size`` does not apply): what ``tools/bench.py`` times."""
        return generator.generate("", self.recipe.eval.generate.max_length, Sampling(temperature=0.0), count or 1)

    def score(self, generator: TextGenerator, valid, loss: float) -> dict:
        scores = self.likelihood(valid, loss)
        return {"bits_per_char": scores["bits_per_char"], "perplexity": scores["perplexity"]}

    def likelihood(self, split, per_token: float) -> dict:
        """The scores of ``split`` from its mean loss per token."""
        n_tokens = sum(split.lengths())
        return {
            "loss": round(per_token, 4),
            "bits_per_char": round(per_token * n_tokens / max(1, split.n_chars) / math.log(2), 4),
            "perplexity": round(math.exp(min(per_token, 50)), 3),
            "n_chars": split.n_chars,
            "n_tokens": n_tokens,
        }

    def evaluate(self, generator: TextGenerator, source: EvalSource, options: dict, out: Path) -> Evaluation:
        """Loss (nats per token), bits per character and perplexity of a split or of a ``--text`` file (UTF-8,
        plain or .gz; read as the recipe's format reads a document: a stream, or a document per line), with the
        characters the model never saw counted (they are scored as the unknown token)."""
        started = time.perf_counter()
        documents = self.evaluation_documents(source)
        tokenizer = generator.tokenizer
        split = self.streams(tokenizer, documents[0], 1) if self.streamed else self.documents(tokenizer, documents)
        model, batch_size = generator.model, self.recipe.eval.batch_size
        loss = validation_loss(model, split, batch_size, generator.device, generator.autocast_dtype)  # all of it
        scores = self.likelihood(split, loss)
        unknown = tokenizer.unknown(documents)
        scores.update(unknown_chars=sum(unknown.values()), seconds=round(time.perf_counter() - started, 2))
        report = [
            f"loss          {scores['loss']:.4f} nats per token ({scores['n_tokens']:,} tokens)",
            f"bits per char {scores['bits_per_char']:.4f} ({scores['n_chars']:,} characters)",
            f"perplexity    {scores['perplexity']:.3f}  ({scores['seconds']:.1f} s)",
        ]
        if unknown:
            report.append(f"characters unseen in training, scored as unknown: {describe(unknown)}")
        return Evaluation(scores, report)

    def evaluation_documents(self, source: EvalSource) -> list[str]:
        """A split's documents, or a file's: the whole file for a stream or a files model, its lines else."""
        if source.split:
            documents, where = load_documents(self.recipe.data, source.split), f"data.{source.split}"
        else:
            path = source.files["text"]
            text, where = read_text(path), str(path)
            lined = isinstance(self.recipe.data, TextLines)
            documents = [line for line in text.split("\n") if line.strip()] if lined else [text]
        if not any(documents):
            raise DataError(f"{where}: no text to score")
        return documents


def describe(unknown) -> str:
    """The unknown characters, most frequent first, as repr and count (the first 20)."""
    shown = ", ".join(f"{char!r} ({count:,})" for char, count in unknown.most_common(20))
    return shown + (", …" if len(unknown) > 20 else "")
