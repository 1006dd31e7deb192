"""Captioning: pictures with captions → SentencePiece → CNN image encoder and the translation decoder; validation
captions the valid pictures and scores BLEU-1…4 against all their references."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from s2s.config import CaptioningRecipe
from s2s.data.batching import ByLength, ImageBatch, PictureBatch, collate_images
from s2s.data.images import (
    BadImage,
    ImageCaptions,
    ImageSource,
    image_tensor,
    load_captioned,
    mirror_caption,
    open_image,
    read_flickr8k_captions,
)
from s2s.errors import DataError
from s2s.features import FeatureCache, backbone_fingerprint, extract_features
from s2s.files import write_text
from s2s.inference import Caption, ImageCaptioner
from s2s.metrics import caption_scores
from s2s.models import Backbone, EncoderDecoder, build_backbone, build_captioner, members_of
from s2s.modules.image_encoders import fixed_features
from s2s.pipelines import EvalSource, Evaluation, Stage, UsageError
from s2s.self_critical import REWARDS, SelfCritical
from s2s.tokenizer import Tokenizer, load_text_tokenizer, train_text_tokenizer


@dataclass
class CaptionedImages(Dataset, ByLength):
    """One example per (image, caption) pair; images are read and transformed when a batch asks for them."""

    images: list[ImageSource]
    references: list[list[str]]  # every caption of each image (what validation scores against)
    image_of: list[int]  # the image of each example
    captions: list[list[int]]  # the token ids of each example's caption
    image_size: int
    augment: bool
    workers: int
    features: torch.Tensor | None = None  # [N images, C, h, w]: a fixed backbone's grids, read instead of pixels
    # data.mirror: each example's caption for its picture mirrored (``mirror_caption``), read half the time with
    # the mirrored picture, or its grid (``mirrored_features``)
    mirrored_captions: list[list[int]] | None = None
    mirrored_features: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.captions)

    def lengths(self) -> list[int]:
        return [len(c) + 1 for c in self.captions]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int], int]:
        # draws from torch's generator: seeded per data-loader worker and saved in checkpoints, so reproducible
        mirrored = self.mirrored_captions is not None and bool(torch.randint(2, ()))
        caption = (self.mirrored_captions if mirrored else self.captions)[index]
        if self.features is not None:
            grids = self.mirrored_features if mirrored else self.features
            return grids[self.image_of[index]].float(), caption, index
        rng = random.Random(int(torch.randint(2**62, ()))) if self.augment else None
        image = open_image(self.images[self.image_of[index]])
        return image_tensor(image, self.image_size, rng, mirrored), caption, index

    def batch(self, indices: list[int]) -> ImageBatch:
        return collate([self[i] for i in indices])

    def iterate(self, batches: list[list[int]]) -> Iterator[ImageBatch]:
        if not self.workers or self.features is not None:  # features are in memory: nothing for workers to do
            return map(self.batch, batches)
        loader = DataLoader(self, batch_sampler=batches, num_workers=self.workers, collate_fn=collate)
        return iter(loader)


@dataclass
class TrainingPictures(ByLength):
    """One example per training picture, for the self-critical stage: its fixed grid, or its pixels (as given:
    the stage rewards captions of the picture itself)."""

    images: list[ImageSource]
    image_size: int
    features: torch.Tensor | None = None  # [N images, C, h, w]

    def __len__(self) -> int:
        return len(self.images)

    def lengths(self) -> list[int]:
        return [1] * len(self.images)

    def batch(self, indices: list[int]) -> PictureBatch:
        if self.features is not None:
            return PictureBatch(self.features[indices].float(), indices)
        pixels = [image_tensor(open_image(self.images[i]), self.image_size) for i in indices]
        return PictureBatch(torch.stack(pixels), indices)

    def iterate(self, batches: list[list[int]]) -> Iterator[PictureBatch]:
        return map(self.batch, batches)


def collate(items: list[tuple[torch.Tensor, list[int], int]]) -> ImageBatch:
    images, captions, indices = zip(*items, strict=True)
    return collate_images(list(images), list(captions), list(indices))


def feature_cache(recipe: CaptioningRecipe, weights: dict, mirrored: bool = False) -> FeatureCache | None:
    """Where the recipe's backbone, computing its fixed grids with ``weights``, keeps them (``mirrored``: of the
    mirrored pictures); None when it has no fixed features or no cache."""
    enc, data = recipe.model.encoder, recipe.data
    if not (enc.features_fixed and data.feature_cache):
        return None
    name = f"{enc.backbone}-before-last-{enc.train_last}" if enc.train_last else enc.backbone
    return FeatureCache(data.feature_cache, backbone_fingerprint(name, weights, data.image_size, mirrored))


def readable(split: ImageCaptions, policy: str, name: str, events) -> ImageCaptions:
    """The split without unreadable images (each decoded once, here, so none can fail mid-epoch)."""
    good, bad = [], []
    for row, source in enumerate(split.images):
        try:
            open_image(source)
            good.append(row)
        except BadImage as error:
            if policy == "fail":
                raise DataError(f"{error} (data.bad_images: fail; set it to skip to train without it)") from None
            bad.append(str(error))
    if bad:
        events.message(f"{name}: skipped {len(bad):,} unreadable images, e.g. {bad[0]}")
    return split.subset(good)


class CaptioningPipeline:
    UNIT = "captions"
    EVAL_FILES = ("images", "captions")
    EVAL_OPTIONS = ("beam", "alpha")

    def __init__(self, recipe: CaptioningRecipe):
        self.recipe = recipe

    def read_splits(self, events) -> tuple[ImageCaptions, ImageCaptions]:
        """The train and valid pictures, without unreadable ones (each decoded once, so none fails mid-epoch)."""
        data, splits = self.recipe.data, []
        for name in ("train", "valid"):
            split = load_captioned(data, name)
            if not split.images:
                raise DataError(f"data.{name}: the {name} split has no images")
            splits.append(readable(split, data.bad_images, name, events))
        return tuple(splits)

    def prepare_assets(self, run_dir: Path, splits, events) -> Tokenizer:
        """The SentencePiece model of the training captions, saved in ``run_dir/tokenizer``."""
        texts = [caption for captions in splits[0].captions for caption in captions]
        return train_text_tokenizer(self.recipe.tokenizer, texts, Path(run_dir) / "tokenizer")

    def load_assets(self, run_dir: Path) -> Tokenizer:
        return load_text_tokenizer(Path(run_dir) / "tokenizer")

    def examples(self, tokenizer: Tokenizer, splits, events) -> tuple[CaptionedImages, CaptionedImages]:
        """One example per caption; with a fixed backbone, each picture's feature grid attached."""
        data, (train, valid) = self.recipe.data, splits
        train_examples, dropped = self.caption_examples(tokenizer, train, training=True)
        events.message(
            f"{len(train.images):,} training images with {len(train_examples):,} captions "
            f"({dropped:,} over data.max_length = {data.max_length} tokens dropped)"
        )
        valid_examples = self.caption_examples(tokenizer, valid, training=False)[0]
        if self.recipe.model.encoder.features_fixed:
            self.attach_features(build_backbone(self.recipe.model.encoder), [train_examples, valid_examples], events)
        return train_examples, valid_examples

    def attach_features(self, backbone: Backbone, splits: list[CaptionedImages], events) -> None:
        """Give each split its images' fixed grids (from the cache, or computed once here): epochs read those."""
        enc, data = self.recipe.model.encoder, self.recipe.data
        net = backbone.net.eval().to(memory_format=torch.channels_last)  # channels-last convolutions run faster
        features, weights = fixed_features(net, backbone.fixed)
        cache = feature_cache(self.recipe, weights)
        mirrored_cache = feature_cache(self.recipe, weights, mirrored=True) if data.mirror else None
        started, computed, total = time.monotonic(), 0, 0
        for split in splits:
            for mirrored in (False, True) if split.mirrored_captions is not None else (False,):
                report = partial(events.work, f"{'mirrored ' if mirrored else ''}features ({enc.backbone})")
                grids, fresh = extract_features(
                    split.images,
                    features,
                    data.image_size,
                    mirrored_cache if mirrored else cache,
                    report,
                    mirrored=mirrored,
                )
                if mirrored:
                    split.mirrored_features = grids
                else:
                    split.features = grids
                computed, total = computed + fresh, total + len(split.images)
        where = f"cache {cache.folder}" if cache else "not kept: data.feature_cache is null"
        if mirrored_cache:
            where += f"; mirrored: {mirrored_cache.folder}"
        events.message(
            f"image features: {total - computed:,} of {total:,} images read from the cache, {computed:,} computed "
            f"in {time.monotonic() - started:.0f} s ({where})"
        )

    def final_stage(self, tokenizer: Tokenizer, train: CaptionedImages) -> Stage | None:
        """With ``self_critical``: the stage that trains on the model's own sampled captions of the training
        pictures, rewarded by CIDEr-D or sentence BLEU-4 against all their references (s2s.self_critical)."""
        config = self.recipe.self_critical
        if config is None:
            return None
        objective = partial(
            SelfCritical,
            reward=REWARDS[config.reward](train.references),
            tokenizer=tokenizer,
            samples=config.samples,
            temperature=config.temperature,
            max_length=self.recipe.eval.max_length,
        )
        pictures = TrainingPictures(train.images, train.image_size, train.features)
        return Stage(
            "self-critical", config.after_steps, config.after_time, config.lr, config.batch_size,
            config.validate_every, pictures, objective,
        )  # fmt: skip

    def caption_examples(
        self, tokenizer: Tokenizer, split: ImageCaptions, training: bool
    ) -> tuple[CaptionedImages, int]:
        """One example per caption, and how many were left out: in training, those over ``data.max_length`` tokens,
        and the pictures augmented and mirrored as the data section says."""
        data = self.recipe.data
        image_of, captions, texts, dropped = [], [], [], 0
        for image, references in enumerate(split.captions):
            for text, ids in zip(references, tokenizer.encode(references), strict=True):
                if training and len(ids) > data.max_length:
                    dropped += 1
                    continue
                image_of.append(image)
                captions.append(ids)
                texts.append(text)
        mirrored = mirrored_ids(tokenizer, texts, captions) if training and data.mirror else None
        examples = CaptionedImages(
            split.images, split.captions, image_of, captions, data.image_size, training and bool(data.augment),
            data.workers, mirrored_captions=mirrored,
        )  # fmt: skip
        return examples, dropped

    def build_model(self, tokenizer: Tokenizer) -> EncoderDecoder:
        return build_captioner(self.recipe.model, tokenizer.vocab_size, self.recipe.data.image_size)

    def predictor(
        self, model: EncoderDecoder, tokenizer: Tokenizer, device: torch.device, dtype=None
    ) -> ImageCaptioner:
        return ImageCaptioner(model, tokenizer, self.recipe.eval, self.recipe.data.image_size, device, dtype)

    def predict(self, captioner: ImageCaptioner, valid: CaptionedImages, count: int | None, beam_size: int | None):
        """The captions of the first ``count`` valid pictures, from their feature grids where they have them."""
        if valid.features is not None:
            return captioner.caption_inputs(list(valid.features[:count].float()), beam_size=beam_size)
        return captioner.caption([open_image(source) for source in valid.images[:count]], beam_size=beam_size)

    def score(self, captioner: ImageCaptioner, valid: CaptionedImages, loss: float) -> dict:
        """BLEU-1…4 and CIDEr-D of the (first ``eval.valid_images``) valid pictures' captions against all their
        references."""
        config = self.recipe.eval
        captions = self.predict(captioner, valid, config.valid_images, config.valid_beam_size)
        scores = caption_scores(best(captions), valid.references[: len(captions)])
        kept = {f"bleu{n}": scores[f"bleu{n}"] for n in (1, 2, 3, 4)}
        return {**kept, "cider": scores["cider"], "signature": scores["signature"]}

    def evaluate(self, captioner: ImageCaptioner, source: EvalSource, options: dict, out: Path) -> Evaluation:
        """BLEU-1…4 of a split's pictures, or of the ``--images`` named in ``--captions``, against all their
        references; the captions written under ``out``. A fixed backbone's grids come from the recipe's cache."""
        started = time.perf_counter()
        pictures = self.evaluation_pictures(source)
        cached = self.cached_features(captioner, pictures.images)
        search = {"beam_size": options.get("beam"), "alpha": options.get("alpha")}
        if cached is not None:
            captions = captioner.caption_inputs(list(cached[0].float()), **search)
        else:
            captions = captioner.caption([open_image(path) for path in pictures.images], **search)
        hypotheses = best(captions)
        scores = {**caption_scores(hypotheses, pictures.captions), "seconds": round(time.perf_counter() - started, 2)}
        names = [str(p) if isinstance(p, Path) else f"#{i}" for i, p in enumerate(pictures.images)]
        lines = [f"{name}\t{caption}" for name, caption in zip(names, hypotheses, strict=True)]
        scores["hypotheses"] = str(write_text(out / f"{source.name}.captions.tsv", lines))
        report = [f"{'':6} {scores['setting']:>31}  as given (cased, punctuation as tokens)"]
        for order in (1, 2, 3, 4):
            report.append(f"BLEU-{order} {scores[f'bleu{order}']:31.2f}  {scores[f'cased_bleu{order}']:6.2f}")
        report.append(f"CIDEr-D {scores['cider']:30.3f}  (idf over these references)")
        report += [
            f"{scores['signature']}  (lowercased, punctuation removed)",
            f"{scores['cased_signature']}  (as given)",
            f"{scores['n_images']:,} images, {scores['seconds']:.1f} s",
            f"captions: {scores['hypotheses']}",
        ]
        return Evaluation(scores, report, [cached[1]] if cached is not None else [])

    def evaluation_pictures(self, source: EvalSource) -> ImageCaptions:
        if source.split:
            return load_captioned(self.recipe.data, source.split)
        image_dir = source.files["images"]
        if not image_dir.is_dir():
            raise UsageError(f"--images: {image_dir}: no such folder")
        named = read_flickr8k_captions(source.files["captions"])
        return ImageCaptions([image_dir / name for name in named], list(named.values()))

    def cached_features(self, captioner: ImageCaptioner, images: list[ImageSource]) -> tuple[torch.Tensor, str] | None:
        """The feature grids of ``images`` and a line saying where they came from, when the recipe caches them."""
        # grids computed here are stored: fixed batch-norm statistics; an ensemble's members share the backbone
        encoder = members_of(captioner.model.eval())[0].encoder
        if not self.recipe.model.encoder.features_fixed:
            return None
        features, weights = encoder.cacheable()
        cache = feature_cache(self.recipe, weights)
        if cache is None:
            return None
        grids, computed = extract_features(images, features, self.recipe.data.image_size, cache)
        return grids, f"image features: {len(images) - computed:,} of {len(images):,} read from {cache.folder}"


def mirrored_ids(tokenizer: Tokenizer, texts: list[str], ids: list[list[int]]) -> list[list[int]]:
    """The ids of each caption for its mirrored picture: encoded again only where "left" and "right" changed."""
    flipped = [mirror_caption(text) for text in texts]
    changed = [row for row, (text, new) in enumerate(zip(texts, flipped, strict=True)) if new != text]
    mirrored = list(ids)
    for row, encoded in zip(changed, tokenizer.encode([flipped[row] for row in changed]), strict=True):
        mirrored[row] = encoded
    return mirrored


def best(captions: list[list[Caption]]) -> list[str]:
    return [options[0].text for options in captions]
