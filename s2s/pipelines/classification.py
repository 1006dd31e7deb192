"""Classification (sentiment): labelled texts → SentencePiece → encoder → pooling → label; validation scores
accuracy, macro-F1 and the confusion matrix."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from s2s.config import ClassificationRecipe
from s2s.data.batching import ByLength, LabelBatch, collate_labelled
from s2s.data.labelled import LabelledTexts, load_labelled, read_column_file
from s2s.errors import DataError, RunError
from s2s.files import atomic_write
from s2s.inference import TextClassifier
from s2s.metrics import classification_scores
from s2s.models import Classifier, ClassifierEnsemble, autocast_dtype, build_classifier, build_encoder
from s2s.pipelines import EvalSource, Evaluation
from s2s.pretraining import pretrain_encoder
from s2s.tokenizer import PieceTokenizer, Tokenizer, load_text_tokenizer, train_text_tokenizer

LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class TextLabels:
    """A classification run's assets: its tokenizer, its label set (in the classifier's output order) and, in a
    new run with ``pretrain``, the pretrained encoder's weights that the classifier starts from."""

    tokenizer: Tokenizer
    labels: list[str]
    encoder: dict[str, torch.Tensor] | None = None


@dataclass
class LabelledIds(ByLength):
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


class SampledTexts(LabelledIds):
    """Training texts segmented anew each epoch (``tokenizer.sampling``): when an epoch's batches are drawn, ``ids``
    becomes a sampled segmentation of every text, so the batches are bucketed by those lengths, not by the best
    segmentations' (sampled ones are longer, and unevenly so: bucketed by the best lengths, much of what the
    recurrence reads would be padding). The sampling seed is drawn from the epoch's generator, which makes an epoch
    drawn again in the same process the same; SentencePiece's draws for a seed differ between processes, so a
    resumed run's do not repeat the uninterrupted run's. Drawn without a generator, ``ids`` is the best
    segmentation."""

    def __init__(self, best: LabelledIds, texts: list[str], tokenizer: PieceTokenizer, alpha: float, limit: int):
        super().__init__(best.ids, best.labels)
        self.best, self.texts, self.tokenizer, self.alpha, self.limit = best.ids, texts, tokenizer, alpha, limit

    def batches(self, batch_size: int, by_tokens: bool, rng: random.Random | None) -> list[list[int]]:
        if rng is None:
            self.ids = self.best
        else:
            sampled = self.tokenizer.sample(self.texts, self.alpha, rng.getrandbits(31))
            self.ids = [t[: self.limit] for t in sampled]
        return super().batches(batch_size, by_tokens, rng)


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
    UNIT = "texts"
    EVAL_FILES = ("data",)
    EVAL_OPTIONS = ()

    def __init__(self, recipe: ClassificationRecipe):
        self.recipe = recipe

    def read_splits(self, events) -> tuple[LabelledTexts, LabelledTexts]:
        splits = load_labelled(self.recipe.data, "train"), load_labelled(self.recipe.data, "valid")
        for name, rows in zip(("train", "valid"), splits, strict=True):
            if not rows.texts:
                raise DataError(f"data.{name}: the {name} split is empty")
        labels = label_set(splits[0].labels)
        if len(labels) < 2:
            raise DataError(f"data.train: needs at least two labels to classify (found {', '.join(labels)})")
        label_ids(splits[1], labels)  # a valid label the model cannot know fails now, before any work
        return splits

    def prepare_assets(self, run_dir: Path, splits, events) -> TextLabels:
        """The label set and the tokenizer of the training split, saved in ``run_dir``."""
        run_dir, train_rows = Path(run_dir), splits[0]
        labels = label_set(train_rows.labels)
        tokenizer = train_text_tokenizer(self.recipe.tokenizer, train_rows.texts, run_dir / "tokenizer")
        text = json.dumps(labels, ensure_ascii=False)
        atomic_write(run_dir / LABELS_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return TextLabels(tokenizer, labels, self.pretrained_encoder(tokenizer, train_rows, events))

    def pretrained_encoder(self, tokenizer: Tokenizer, train_rows: LabelledTexts, events) -> dict | None:
        """With ``pretrain``: the encoder's weights after learning the training texts as a language model."""
        if self.recipe.pretrain is None:
            return None
        from s2s.train import resolve_device  # s2s.train imports the pipelines

        train = self.recipe.train
        device = resolve_device(train.device)
        texts = [t[: self.recipe.data.max_length] for t in tokenizer.encode(train_rows.texts)]
        encoder = build_encoder(self.recipe.model.encoder, tokenizer.vocab_size)
        model = pretrain_encoder(
            encoder, tokenizer.vocab_size, texts, self.recipe.pretrain, train.seed, device,
            autocast_dtype(train.precision, device), events,
        )  # fmt: skip
        return {name: value.detach().cpu() for name, value in model.encoder.state_dict().items()}

    def load_assets(self, run_dir: Path) -> TextLabels:
        tokenizer = load_text_tokenizer(Path(run_dir) / "tokenizer")
        try:
            labels = json.loads((Path(run_dir) / LABELS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunError(f"{Path(run_dir) / LABELS_FILE}: cannot read the label set ({error})") from None
        return TextLabels(tokenizer, labels)

    def examples(self, assets: TextLabels, splits, events) -> tuple[LabelledIds, LabelledIds]:
        """Both splits encoded: token ids cut at ``data.max_length``, label ids."""
        (train, truncated), (valid, _) = (self.encode(assets, rows) for rows in splits)
        alpha = self.recipe.tokenizer.sampling
        if alpha is not None:
            train = SampledTexts(train, splits[0].texts, assets.tokenizer, alpha, self.recipe.data.max_length)
        events.message(
            f"{len(train):,} training texts with labels {', '.join(assets.labels)}; "
            f"{truncated:,} truncated to data.max_length = {self.recipe.data.max_length} tokens"
        )
        return train, valid

    def encode(self, assets: TextLabels, rows: LabelledTexts) -> tuple[LabelledIds, int]:
        """Token ids cut at ``data.max_length`` and label ids; and how many texts were cut."""
        limit = self.recipe.data.max_length
        ids = assets.tokenizer.encode(rows.texts)
        truncated = sum(len(t) > limit for t in ids)
        return LabelledIds([t[:limit] for t in ids], label_ids(rows, assets.labels)), truncated

    def build_model(self, assets: TextLabels) -> Classifier | ClassifierEnsemble:
        model = build_classifier(self.recipe.model, assets.tokenizer.vocab_size, len(assets.labels))
        if assets.encoder is not None:  # a recipe with pretrain has one member
            model.encoder.load_state_dict(assets.encoder)
        return model

    def predictor(
        self, model: Classifier | ClassifierEnsemble, assets: TextLabels, device: torch.device, dtype=None
    ) -> TextClassifier:
        limit, batch_size = self.recipe.data.max_length, self.recipe.eval.batch_size
        return TextClassifier(model, assets.tokenizer, assets.labels, limit, batch_size, device, dtype)

    def predict(self, classifier: TextClassifier, valid: LabelledIds, count: int | None, beam_size=None) -> list[int]:
        """The predicted label id of each text (``beam_size`` does not apply)."""
        return classifier.probabilities(valid.ids[:count]).argmax(-1).tolist()

    def score(self, classifier: TextClassifier, valid: LabelledIds, loss: float) -> dict:
        return classification_scores(valid.labels, self.predict(classifier, valid, None), classifier.labels)

    def evaluate(self, classifier: TextClassifier, source: EvalSource, options: dict, out: Path) -> Evaluation:
        """Accuracy, macro-F1 and the confusion matrix of a split or of a ``--data`` column file."""
        if source.split:
            rows = load_labelled(self.recipe.data, source.split)
        else:
            path = source.files["data"]
            rows = read_column_file(self.recipe.data.model_copy(update={"format": column_format(path, self)}), path)
        started = time.perf_counter()
        gold = label_ids(rows, classifier.labels)
        predicted = classifier.probabilities(classifier.encode(rows.texts)).argmax(-1).tolist()
        scores = classification_scores(gold, predicted, classifier.labels)
        scores["seconds"] = round(time.perf_counter() - started, 2)
        report = [
            f"accuracy {scores['accuracy']:6.2f}",
            f"macro-F1 {scores['macro_f1']:6.2f}  ({scores['n_examples']:,} texts, {scores['seconds']:.1f} s)",
            *confusion_table(scores["labels"], scores["confusion"]),
        ]
        return Evaluation(scores, report)


def column_format(path: Path, pipeline: ClassificationPipeline) -> str:
    """The format of a --data file from its name (data.tsv, data.csv.gz, data.jsonl …), else the recipe's."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    known = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
    return known.get(suffixes[-1] if suffixes else "", pipeline.recipe.data.format)


def confusion_table(labels: list[str], confusion: list[list[int]]) -> list[str]:
    """Rows: the gold label; columns: the predicted one."""
    width = max(8, *(len(label) + 2 for label in labels))
    lines = ["gold \\ predicted".ljust(width + 8) + "".join(label.rjust(width) for label in labels)]
    for label, row in zip(labels, confusion, strict=True):
        lines.append(label.ljust(width + 8) + "".join(f"{count:,}".rjust(width) for count in row))
    return lines
