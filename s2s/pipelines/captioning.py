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
from s2s.data.batching import ImageBatch, collate_images
from s2s.data.images import BadImage, ImageCaptions, ImageSource, image_tensor, load_captioned, open_image
from s2s.errors import DataError
from s2s.features import FeatureCache, backbone_fingerprint, extract_features
from s2s.inference import ImageCaptioner
from s2s.metrics import caption_scores
from s2s.models import Seq2Seq, build_backbone, build_captioner
from s2s.tokenizer import Tokenizer, load_text_tokenizer, train_text_tokenizer


@dataclass
class CaptionedImages(Dataset):
    """One example per (image, caption) pair; images are read and transformed when a batch asks for them."""

    images: list[ImageSource]
    references: list[list[str]]  # every caption of each image (what validation scores against)
    image_of: list[int]  # the image of each example
    captions: list[list[int]]  # the token ids of each example's caption
    image_size: int
    augment: bool
    workers: int
    features: torch.Tensor | None = None  # [N images, C, h, w]: a fixed backbone's grids, read instead of pixels

    def __len__(self) -> int:
        return len(self.captions)

    def lengths(self) -> list[int]:
        return [len(c) + 1 for c in self.captions]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[int], int]:
        if self.features is not None:
            return self.features[self.image_of[index]].float(), self.captions[index], index
        # a seed from torch's generator: seeded per data-loader worker, so augmentation is reproducible
        rng = random.Random(int(torch.randint(2**62, ()))) if self.augment else None
        image = open_image(self.images[self.image_of[index]])
        return image_tensor(image, self.image_size, rng), self.captions[index], index

    def batch(self, indices: list[int]) -> ImageBatch:
        return collate([self[i] for i in indices])

    def iterate(self, batches: list[list[int]]) -> Iterator[ImageBatch]:
        if not self.workers or self.features is not None:  # features are in memory: nothing for workers to do
            return map(self.batch, batches)
        loader = DataLoader(self, batch_sampler=batches, num_workers=self.workers, collate_fn=collate)
        return iter(loader)


def collate(items: list[tuple[torch.Tensor, list[int], int]]) -> ImageBatch:
    images, captions, indices = zip(*items, strict=True)
    return collate_images(list(images), list(captions), list(indices))


def feature_cache(recipe: CaptioningRecipe, backbone: torch.nn.Module) -> FeatureCache | None:
    """Where the recipe's backbone keeps its feature grids; None when it has no fixed features or no cache."""
    enc, data = recipe.model.encoder, recipe.data
    if not (enc.features_fixed and data.feature_cache):
        return None
    return FeatureCache(data.feature_cache, backbone_fingerprint(enc.backbone, backbone, data.image_size))


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
    def __init__(self, recipe: CaptioningRecipe):
        self.recipe = recipe
        self.tokenizer: Tokenizer | None = None

    def read_splits(self) -> tuple[ImageCaptions, ImageCaptions]:
        splits = load_captioned(self.recipe.data, "train"), load_captioned(self.recipe.data, "valid")
        for name, split in zip(("train", "valid"), splits, strict=True):
            if not split.images:
                raise DataError(f"data.{name}: the {name} split has no images")
        return splits

    def prepare(self, run_dir: Path, events, reuse: bool, splits) -> tuple[CaptionedImages, CaptionedImages]:
        data = self.recipe.data
        train, valid = (
            readable(split, data.bad_images, name, events)
            for split, name in zip(splits, ("train", "valid"), strict=True)
        )
        tokenizer_dir = Path(run_dir) / "tokenizer"
        if reuse and tokenizer_dir.is_dir():
            self.load_assets(run_dir)
        else:
            texts = [caption for captions in train.captions for caption in captions]
            self.tokenizer = train_text_tokenizer(self.recipe.tokenizer, texts, tokenizer_dir)
        train_examples, dropped = self.examples(train, augment=data.augment, max_length=data.max_length)
        events.message(
            f"{len(train.images):,} training images with {len(train_examples):,} captions "
            f"({dropped:,} over data.max_length = {data.max_length} tokens dropped)"
        )
        valid_examples = self.examples(valid, augment=False, max_length=None)[0]
        if self.recipe.model.encoder.features_fixed:
            self.attach_features([train_examples, valid_examples], events)
        return train_examples, valid_examples

    def attach_features(self, splits: list[CaptionedImages], events) -> None:
        """Give each split its images' feature grids (from the cache, or computed once here): epochs read those."""
        enc, data = self.recipe.model.encoder, self.recipe.data
        backbone = build_backbone(enc)[0].eval().to(memory_format=torch.channels_last)  # ~10 % faster on CPU
        cache = feature_cache(self.recipe, backbone)
        started, computed, total = time.monotonic(), 0, 0
        for split in splits:
            report = partial(events.work, f"features ({enc.backbone})")
            split.features, fresh = extract_features(split.images, backbone, data.image_size, cache, report)
            computed, total = computed + fresh, total + len(split.images)
        where = f"cache {cache.folder}" if cache else "not kept: data.feature_cache is null"
        events.message(
            f"image features: {total - computed:,} of {total:,} images read from the cache, {computed:,} computed "
            f"in {time.monotonic() - started:.0f} s ({where})"
        )

    def examples(self, split: ImageCaptions, augment: bool, max_length: int | None) -> tuple[CaptionedImages, int]:
        """One example per caption (those over ``max_length`` tokens left out), and how many were left out."""
        data = self.recipe.data
        image_of, captions, dropped = [], [], 0
        for image, references in enumerate(split.captions):
            for ids in self.tokenizer.encode(references):
                if max_length is not None and len(ids) > max_length:
                    dropped += 1
                    continue
                image_of.append(image)
                captions.append(ids)
        examples = CaptionedImages(
            split.images, split.captions, image_of, captions, data.image_size, augment, data.workers
        )
        return examples, dropped

    def load_assets(self, run_dir: Path) -> None:
        self.tokenizer = load_text_tokenizer(Path(run_dir) / "tokenizer")

    def build_model(self) -> Seq2Seq:
        return build_captioner(self.recipe.model, self.tokenizer.vocab_size, self.recipe.data.image_size)

    def predictor(self, model: Seq2Seq, device: torch.device, dtype=None) -> ImageCaptioner:
        return ImageCaptioner(model, self.tokenizer, self.recipe.eval, self.recipe.data.image_size, device, dtype)

    def score(self, model: Seq2Seq, valid: CaptionedImages, device: torch.device, dtype) -> dict:
        """BLEU-1…4 of the (first ``eval.valid_images``) valid pictures' captions against all references."""
        count = self.recipe.eval.valid_images or len(valid.images)
        predictor, beam = self.predictor(model, device, dtype), self.recipe.eval.valid_beam_size
        if valid.features is not None:
            captions = predictor.caption_inputs(list(valid.features[:count].float()), beam_size=beam)
        else:
            captions = predictor.caption([open_image(source) for source in valid.images[:count]], beam_size=beam)
        scores = caption_scores([options[0].text for options in captions], valid.references[:count])
        return {**{f"bleu{n}": scores[f"bleu{n}"] for n in (1, 2, 3, 4)}, "signature": scores["signature"]}
