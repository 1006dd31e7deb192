"""Images with captions: the layouts a recipe can name, image loading, and the transforms a CNN wants.

Layouts: Flickr8k (an image folder, a captions file of ``image.jpg#N<TAB>caption`` lines and one file of image
names per split), JSON Lines / CSV files with image and caption columns (one row per caption), a Hugging Face
``imagefolder`` with metadata, and the generated shapes set. Images are read lazily, by path, when a batch needs
them (in data-loader workers); a file that is missing, truncated or not an image is reported with its path.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageEnhance, UnidentifiedImageError

from s2s.config import CaptionTable, Flickr8kCaptions, ImageCaptionData, ImageFolderCaptions, ShapesCaptions
from s2s.data.corpus import first_line, read_lines
from s2s.data.shapes import shapes_split
from s2s.data.splits import split_spec
from s2s.errors import DataError

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEEDS = {"train": 0, "valid": 1, "test": 2}  # generated splits draw from different seeds

ImageSource = Path | Image.Image  # a file, or a picture already in memory (generated, or from a hub dataset)


@dataclass
class ImageCaptions:
    images: list[ImageSource]
    captions: list[list[str]]  # every reference caption of each image

    def subset(self, rows: list[int]) -> ImageCaptions:
        return ImageCaptions([self.images[i] for i in rows], [self.captions[i] for i in rows])


class BadImage(DataError):
    pass


def load_captioned(data: ImageCaptionData, split: str) -> ImageCaptions:
    """All images of ``split`` with their captions, as the recipe's ``data`` section describes them."""
    if isinstance(data, ShapesCaptions):
        gen = data.generator
        size = {"train": gen.train_size, "valid": gen.valid_size, "test": gen.test_size}[split]
        pictures = shapes_split(size, gen.image_size, gen.seed * 1000 + SPLIT_SEEDS[split])
        return ImageCaptions([p for p, _ in pictures], [c for _, c in pictures])
    spec = split_spec(data, split)
    if isinstance(data, Flickr8kCaptions):
        return read_flickr8k(Path(data.image_dir), Path(data.captions), Path(spec.images))
    if isinstance(data, ImageFolderCaptions):
        return read_imagefolder(data, spec.split)
    return read_caption_table(data, Path(spec.path))


def read_flickr8k_captions(captions_file: Path) -> dict[str, list[str]]:
    """``image.jpg#N<TAB>caption`` lines → image name → its captions, in file order."""
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(read_lines(captions_file), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        if not tab:
            raise DataError(f"{captions_file}:{number}: expected IMAGE#N<TAB>CAPTION")
        captions.setdefault(key.rsplit("#", 1)[0], []).append(caption.strip())
    return captions


def read_flickr8k(image_dir: Path, captions_file: Path, list_file: Path) -> ImageCaptions:
    captions = read_flickr8k_captions(captions_file)
    images, references = [], []
    for number, name in enumerate(read_lines(list_file), start=1):
        name = name.strip()
        if not name:
            continue
        if name not in captions:
            raise DataError(f"{list_file}:{number}: {name} has no caption in {captions_file}")
        images.append(image_dir / name)
        references.append(captions[name])
    return ImageCaptions(images, references)


def read_caption_table(data: CaptionTable, path: Path) -> ImageCaptions:
    """One row per caption; rows of the same image are grouped. Image paths are relative to ``data.image_dir``
    (default: the table's folder)."""
    from datasets import disable_progress_bars, load_dataset

    disable_progress_bars()
    builder = {"jsonl": "json", "csv": "csv"}[data.format]
    try:
        table = load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:
        raise DataError(f"{path}: cannot read as {data.format}: {first_line(error)}") from None
    for column in (data.image_column, data.caption_column):
        if column not in table.column_names:
            raise DataError(f"{path}: no column {column!r} (columns: {', '.join(table.column_names)})")
    base = Path(data.image_dir) if data.image_dir else path.parent
    grouped: dict[str, list[str]] = {}
    for name, caption in zip(table[data.image_column], table[data.caption_column], strict=True):
        grouped.setdefault(str(name), []).append("" if caption is None else str(caption).strip())
    return ImageCaptions([base / name for name in grouped], list(grouped.values()))


def read_imagefolder(data: ImageFolderCaptions, split: str) -> ImageCaptions:
    """A Hugging Face ``imagefolder`` (images and a metadata.jsonl/csv with the caption column)."""
    from datasets import disable_progress_bars, load_dataset

    disable_progress_bars()
    try:
        table = load_dataset("imagefolder", data_dir=data.image_dir, split=split)
    except Exception as error:
        raise DataError(f"data.image_dir: cannot load {data.image_dir} as imagefolder: {first_line(error)}") from None
    if data.caption_column not in table.column_names:
        raise DataError(f"{data.image_dir}: no metadata column {data.caption_column!r}")
    images, references = [], []
    for row in table:
        caption = row[data.caption_column]
        images.append(row["image"])
        references.append([str(c) for c in caption] if isinstance(caption, list) else [str(caption)])
    return ImageCaptions(images, references)


# ---------------------------------------------------------------- reading and transforming images


def open_image(source: ImageSource) -> Image.Image:
    """The picture as RGB, fully decoded (so a truncated file fails here, not later); BadImage names the file."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    try:
        with Image.open(source) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise BadImage(f"{source}: file not found") from None
    except UnidentifiedImageError:
        raise BadImage(f"{source}: not an image file") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports truncated and corrupt files so
        raise BadImage(f"{source}: unreadable image ({first_line(error)})") from None


def image_tensor(
    image: Image.Image, size: int, rng: random.Random | None = None, mirrored: bool = False
) -> torch.Tensor:
    """[3, size, size], normalised as ImageNet models expect. With ``rng`` (training, augment): a random crop
    of a 1/0.875 larger resize and a little brightness and contrast jitter; without: resize and centre crop.
    ``mirrored``: the crop flipped left to right, whose captions need ``mirror_caption`` (they say "left of")."""
    scale = size / 0.875 if rng is not None else size
    width, height = image.size
    factor = scale / min(width, height)
    resized = image.resize((max(size, round(width * factor)), max(size, round(height * factor))), Image.BILINEAR)
    free_x, free_y = resized.width - size, resized.height - size
    left = rng.randint(0, free_x) if rng is not None else free_x // 2
    top = rng.randint(0, free_y) if rng is not None else free_y // 2
    cropped = resized.crop((left, top, left + size, top + size))
    if mirrored:
        cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng is not None:
        cropped = ImageEnhance.Brightness(cropped).enhance(rng.uniform(0.8, 1.2))
        cropped = ImageEnhance.Contrast(cropped).enhance(rng.uniform(0.8, 1.2))
    pixels = torch.frombuffer(bytearray(cropped.tobytes()), dtype=torch.uint8).view(size, size, 3)
    return (pixels.permute(2, 0, 1).float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


SIDES = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def mirror_caption(caption: str) -> str:
    """The caption of the picture mirrored left to right: the words "left" and "right" swapped, case kept."""

    def swap(match: re.Match) -> str:
        word = match.group()
        other = "right" if word.lower() == "left" else "left"
        return other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other

    return SIDES.sub(swap, caption)


def image_files(paths: list[Path]) -> list[Path]:
    """Files named, and the files under folders named (sorted; image suffixes only in folders)."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    return found
