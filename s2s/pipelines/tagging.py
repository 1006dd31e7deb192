"""Tagging (synchronised many-to-many): sentences given as words → one tag per word (part of speech). Words are
read as themselves and as their characters; validation scores accuracy over words, over words unseen in training,
and macro-F1 over the tags."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from s2s.config import TaggingRecipe
from s2s.data.batching import ByLength, TagBatch, collate_tagged
from s2s.data.tagged import TaggedSentences, conllu_lines, load_tagged, read_conllu, read_word_tag_tsv
from s2s.errors import DataError, RunError
from s2s.files import atomic_write, write_text
from s2s.inference import WordTagger
from s2s.metrics import tagging_scores
from s2s.models import Tagger, build_tagger
from s2s.pipelines import EvalSource, Evaluation
from s2s.tokenizer import UNK

VOCABULARY_FILE = "vocabulary.json"
SPECIALS = ["<pad>", "<unk>"]  # ids PAD and UNK of the word and character vocabularies


@dataclass
class Vocabulary:
    """A tagging run's assets: every training word, every training character, the tag set (in output order)."""

    words: list[str]
    chars: list[str]
    tags: list[str]
    max_chars: int  # characters read of a word
    word_ids: dict[str, int] = field(init=False, repr=False)
    char_ids: dict[str, int] = field(init=False, repr=False)
    tag_ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.word_ids = {w: i for i, w in enumerate(self.words)}
        self.char_ids = {c: i for i, c in enumerate(self.chars)}
        self.tag_ids = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def of(cls, train: TaggedSentences, max_chars: int) -> Vocabulary:
        """From the training sentences; words and characters by frequency, tags in sorted order."""
        words = Counter(word for sentence in train.words for word in sentence)
        chars = Counter(char for sentence in train.words for word in sentence for char in word[:max_chars])
        tags = sorted({tag for sentence in train.tags for tag in sentence})
        ranked = lambda counts: [item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]  # noqa: E731
        return cls(SPECIALS + ranked(words), SPECIALS + ranked(chars), tags, max_chars)

    def encode(self, sentences: list[list[str]]) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Word ids (UNK for a word not seen in training) and each word's character ids."""
        words = [[self.word_ids.get(word, UNK) for word in sentence] for sentence in sentences]
        chars = [
            [[self.char_ids.get(char, UNK) for char in word[: self.max_chars]] or [UNK] for word in sentence]
            for sentence in sentences
        ]
        return words, chars

    def tag_ids_of(self, tags: list[list[str]]) -> list[list[int]]:
        """Tag ids; -1 for a tag the model does not know."""
        return [[self.tag_ids.get(tag, -1) for tag in sentence] for sentence in tags]

    def save(self, path: Path) -> None:
        keys = {"words": self.words, "chars": self.chars, "tags": self.tags, "max_chars": self.max_chars}
        text = json.dumps(keys, ensure_ascii=False)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            keys = json.loads(path.read_text(encoding="utf-8"))
            return cls(keys["words"], keys["chars"], keys["tags"], keys["max_chars"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunError(f"{path}: cannot read the vocabulary ({error})") from None


@dataclass
class TaggedIds(ByLength):
    """One prepared split: word ids, character ids and tag ids of each sentence."""

    words: list[list[int]]
    chars: list[list[list[int]]]
    tags: list[list[int]]

    def __len__(self) -> int:
        return len(self.words)

    def lengths(self) -> list[int]:
        return [len(w) for w in self.words]

    def batch(self, indices: list[int]) -> TagBatch:
        pick = lambda column: [column[i] for i in indices]  # noqa: E731
        return collate_tagged(pick(self.words), pick(self.chars), pick(self.tags), indices)

    def iterate(self, batches: list[list[int]]) -> Iterator[TagBatch]:
        return map(self.batch, batches)


class TaggingPipeline:
    UNIT = "sentences"
    EVAL_FILES = ("data",)
    EVAL_OPTIONS = ()

    def __init__(self, recipe: TaggingRecipe):
        self.recipe = recipe

    def read_splits(self, events) -> tuple[TaggedSentences, TaggedSentences]:
        splits = load_tagged(self.recipe.data, "train"), load_tagged(self.recipe.data, "valid")
        for name, split in zip(("train", "valid"), splits, strict=True):
            if not split.words:
                raise DataError(f"data.{name}: the {name} split has no sentences")
            if split.skipped_empty:
                events.message(f"{name}: {split.skipped_empty:,} empty sentences skipped")
        return splits

    def prepare_assets(self, run_dir: Path, splits, events) -> Vocabulary:
        """The word, character and tag vocabularies of the training split, saved in the run directory."""
        vocabulary = Vocabulary.of(splits[0], self.recipe.model.characters.max_length)
        vocabulary.save(Path(run_dir) / VOCABULARY_FILE)
        return vocabulary

    def load_assets(self, run_dir: Path) -> Vocabulary:
        return Vocabulary.load(Path(run_dir) / VOCABULARY_FILE)

    def examples(self, vocabulary: Vocabulary, splits, events) -> tuple[TaggedIds, TaggedIds]:
        """Both splits as ids; training sentences over ``data.max_length`` words dropped (and counted)."""
        train, valid = splits
        limit = self.recipe.data.max_length
        kept = [i for i, words in enumerate(train.words) if len(words) <= limit]
        events.message(
            f"{len(kept):,} training sentences with {len(vocabulary.tags)} tags ({', '.join(vocabulary.tags)}); "
            f"{len(train.words) - len(kept):,} over data.max_length = {limit} words dropped"
        )
        return self.encode(vocabulary, train.subset(kept)), self.encode(vocabulary, valid)

    @staticmethod
    def encode(vocabulary: Vocabulary, split: TaggedSentences) -> TaggedIds:
        words, chars = vocabulary.encode(split.words)
        return TaggedIds(words, chars, vocabulary.tag_ids_of(split.tags))

    def build_model(self, vocabulary: Vocabulary) -> Tagger:
        return build_tagger(self.recipe.model, len(vocabulary.words), len(vocabulary.chars), len(vocabulary.tags))

    def predictor(self, model: Tagger, vocabulary: Vocabulary, device: torch.device, dtype=None) -> WordTagger:
        return WordTagger(model, vocabulary, self.recipe.eval.batch_size, device, dtype)

    def predict(self, tagger: WordTagger, valid: TaggedIds, count: int | None, beam_size=None) -> list[list[int]]:
        """The predicted tag id of every word of the first ``count`` sentences (``beam_size`` does not apply)."""
        probabilities = tagger.probabilities(valid.words[:count], valid.chars[:count])
        return [p.argmax(-1).tolist() for p in probabilities]

    def score(self, tagger: WordTagger, valid: TaggedIds, loss: float) -> dict:
        scores = self.scores(valid, self.predict(tagger, valid, None), tagger.tags)
        return {k: scores[k] for k in ("accuracy", "oov_accuracy", "macro_f1")}

    @staticmethod
    def scores(split: TaggedIds, predicted: list[list[int]], tags: list[str]) -> dict:
        flat = lambda rows: [x for row in rows for x in row]  # noqa: E731
        unseen = [word == UNK for word in flat(split.words)]
        return tagging_scores(flat(split.tags), flat(predicted), unseen, tags)

    def evaluate(self, tagger: WordTagger, source: EvalSource, options: dict, out: Path) -> Evaluation:
        """Accuracy (all words, words unseen in training), macro-F1 and a per-tag table of a split or of a
        ``--data`` file (CoNLL-U, or word<TAB>tag TSV); the predicted tags written to ``out/NAME.conllu``."""
        started = time.perf_counter()
        sentences = self.evaluation_sentences(source)
        split = self.encode(tagger.vocabulary, sentences)
        predicted = self.predict(tagger, split, None)
        scores = self.scores(split, predicted, tagger.tags)
        pairs = zip(sentences.tags, split.tags, strict=True)
        unknown = Counter(t for names, ids in pairs for t, k in zip(names, ids, strict=True) if k < 0)
        scores.update(n_sentences=len(split), unknown_tags=dict(unknown), skipped_empty=sentences.skipped_empty)
        scores["seconds"] = round(time.perf_counter() - started, 2)
        column = getattr(self.recipe.data, "column", "upos")
        lines = conllu_lines(sentences.words, [[tagger.tags[k] for k in row] for row in predicted], column)
        scores["predictions"] = str(write_text(out / f"{source.name}.conllu", lines))
        return Evaluation(scores, report_lines(scores))

    def evaluation_sentences(self, source: EvalSource) -> TaggedSentences:
        if source.split:
            return load_tagged(self.recipe.data, source.split)
        path = source.files["data"]
        if path.name.lower().removesuffix(".gz").endswith(".conllu"):
            return read_conllu(path, getattr(self.recipe.data, "column", "upos"))
        return read_word_tag_tsv(path)


def report_lines(scores: dict) -> list[str]:
    """The scores, then one row per tag: precision, recall, F1, support."""
    lines = [
        f"accuracy     {scores['accuracy']:6.2f}  ({scores['n_words']:,} words, {scores['n_sentences']:,} sentences)",
        f"oov accuracy {scores['oov_accuracy']:6.2f}  ({scores['n_oov_words']:,} words unseen in training)",
        f"macro-F1     {scores['macro_f1']:6.2f}  ({scores['seconds']:.1f} s)",
        f"{'tag':<10}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}",
    ]
    for tag, row in scores["per_tag"].items():
        lines.append(f"{tag:<10}{row['precision']:>10.2f}{row['recall']:>10.2f}{row['f1']:>10.2f}{row['support']:>10,}")
    if scores["unknown_tags"]:
        unknown = ", ".join(f"{tag} ({count:,})" for tag, count in sorted(scores["unknown_tags"].items()))
        lines.append(f"tags the model never saw in training, counted as misses: {unknown}")
    if scores["skipped_empty"]:
        lines.append(f"empty sentences skipped: {scores['skipped_empty']:,}")
    lines.append(f"predictions: {scores['predictions']}")
    return lines
