"""Classification (sentiment): labelled texts → SentencePiece → encoder → pooling → label; validation scores
accuracy, macro-F1 and the confusion matrix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.config import ClassificationRecipe
from s2s.data.batching import LabelBatch, collate_labelled
from s2s.data.labelled import LabelledTexts, load_labelled
from s2s.errors import DataError, RunError
from s2s.files import atomic_write
from s2s.inference import TextClassifier
from s2s.metrics import classification_scores
from s2s.models import Classifier, build_classifier
from s2s.tokenizer import Tokenizer, load_text_tokenizer, train_text_tokenizer

LABELS_FILE = "labels.json"


@dataclass
class LabelledIds:
    ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(t) for t in self.ids]

    def batch(self, indices: list[int]) -> LabelBatch:
        return collate_labelled([self.ids[i] for i in indices], [self.labels[i] for i in indices], indices)

    def iterate(self, batches: list[list[int]]) -> Iterator[LabelBatch]:
        return map(self.batch, batches)


def label_set(labels: list[str]) -> list[str]:
    """The labels in a stable order: numerically when all are integers (0, 1, 2 …, not 0, 1, 10), else sorted."""
    distinct = set(labels)
    if all(label.lstrip("-").isdigit() for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def label_ids(rows: LabelledTexts, labels: list[str]) -> list[int]:
    """Each row's label id; a label the model does not know is an error naming the row's file and line."""
    index = {label: k for k, label in enumerate(labels)}
    ids = []
    for label, place in zip(rows.labels, rows.places, strict=True):
        if label not in index:
            raise DataError(f"{place}: label {label!r} is not one of the model's labels ({', '.join(labels)})")
        ids.append(index[label])
    return ids


class ClassificationPipeline:
    def __init__(self, recipe: ClassificationRecipe):
        self.recipe = recipe
        self.tokenizer: Tokenizer | None = None
        self.labels: list[str] = []

    def read_splits(self) -> tuple[LabelledTexts, LabelledTexts]:
        splits = load_labelled(self.recipe.data, "train"), load_labelled(self.recipe.data, "valid")
        for name, rows in zip(("train", "valid"), splits, strict=True):
            if not rows.texts:
                raise DataError(f"data.{name}: the {name} split is empty")
        labels = label_set(splits[0].labels)
        if len(labels) < 2:
            raise DataError(f"data.train: needs at least two labels to classify (found {', '.join(labels)})")
        label_ids(splits[1], labels)  # a valid label the model cannot know fails now, before any work
        return splits

    def prepare(self, run_dir: Path, events, reuse: bool, splits) -> tuple[LabelledIds, LabelledIds]:
        """Label set and tokenizer from the training split (or reused on resume); both splits encoded."""
        train_rows, valid_rows = splits
        run_dir = Path(run_dir)
        if reuse and (run_dir / "tokenizer").is_dir():
            self.load_assets(run_dir)
        else:
            self.labels = label_set(train_rows.labels)
            self.tokenizer = train_text_tokenizer(self.recipe.tokenizer, train_rows.texts, run_dir / "tokenizer")
            text = json.dumps(self.labels, ensure_ascii=False)
            atomic_write(run_dir / LABELS_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        (train, truncated), (valid, _) = self.encode(train_rows), self.encode(valid_rows)
        events.message(
            f"{len(train):,} training texts with labels {', '.join(self.labels)}; "
            f"{truncated:,} truncated to data.max_length = {self.recipe.data.max_length} tokens"
        )
        return train, valid

    def encode(self, rows: LabelledTexts) -> tuple[LabelledIds, int]:
        """Token ids cut at ``data.max_length`` and label ids; and how many texts were cut."""
        limit = self.recipe.data.max_length
        ids = self.tokenizer.encode(rows.texts)
        truncated = sum(len(t) > limit for t in ids)
        return LabelledIds([t[:limit] for t in ids], label_ids(rows, self.labels)), truncated

    def load_assets(self, run_dir: Path) -> None:
        self.tokenizer = load_text_tokenizer(Path(run_dir) / "tokenizer")
        try:
            self.labels = json.loads((Path(run_dir) / LABELS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunError(f"{Path(run_dir) / LABELS_FILE}: cannot read the label set ({error})") from None

    def build_model(self) -> Classifier:
        return build_classifier(self.recipe.model, self.tokenizer.vocab_size, len(self.labels))

    def predictor(self, model: Classifier, device: torch.device, dtype=None) -> TextClassifier:
        data = self.recipe.data
        return TextClassifier(
            model, self.tokenizer, self.labels, data.max_length, self.recipe.eval.batch_size, device, dtype
        )

    def score(self, model: Classifier, valid: LabelledIds, device: torch.device, dtype) -> dict:
        predicted = self.predictor(model, device, dtype).probabilities(valid.ids).argmax(-1).tolist()
        return classification_scores(valid.labels, predicted, self.labels)


def score_rows(classifier: TextClassifier, rows: LabelledTexts) -> dict:
    """Scores of a trained classifier on labelled rows (a split or a user's file)."""
    gold = label_ids(rows, classifier.labels)
    predicted = classifier.probabilities(classifier.encode(rows.texts)).argmax(-1).tolist()
    return classification_scores(gold, predicted, classifier.labels)
