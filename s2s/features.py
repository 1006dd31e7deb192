"""The feature cache: with a frozen pretrained backbone an image's feature grid never changes, so it is computed once
and kept on disk, and later epochs and later runs read it instead of running the CNN.

An entry is keyed by the image's content (SHA-256 of the file's bytes, or of the pixels of an in-memory picture)
under a folder named by the backbone's fingerprint (its name, every weight, the image size and the preprocessing),
so a changed image or a different backbone can only miss, never read a stale grid. Entries are written under a
temporary name and renamed, so the cache holds whole files only; an entry that cannot be read is computed again.
Deleting the cache folder is always safe: it only costs the time to fill it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from s2s.data.images import BadImage, ImageSource, image_tensor, open_image
from s2s.files import atomic_write

# how pixels reach the backbone (s2s.data.images.image_tensor without augmentation); change it when that changes
PREPROCESSING = "resize-shorter-bilinear,centre-crop,imagenet-mean-std/1"
STORED_DTYPE = torch.float16  # half the disk and memory; ReLU6 features in [0, 6] keep ~3 significant digits


def backbone_fingerprint(name: str, weights: dict[str, torch.Tensor], image_size: int, mirrored: bool = False) -> str:
    """What decides a feature grid besides the image: the backbone (its name and the ``weights`` that compute the
    grid) and the preprocessing (``mirrored``: of the pictures flipped left to right)."""
    steps = f"{PREPROCESSING},mirrored" if mirrored else PREPROCESSING
    digest = hashlib.sha256(f"{name}|{image_size}|{steps}".encode())
    for key, tensor in weights.items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{name.replace('/', '-')}-{digest.hexdigest()[:16]}"


def image_digest(source: ImageSource) -> str:
    """SHA-256 of a file's bytes (the content, not the name), or of an in-memory picture's mode, size and pixels."""
    if isinstance(source, Image.Image):
        header = f"{source.mode}|{source.size}|".encode()
        return hashlib.sha256(header + source.tobytes()).hexdigest()
    try:
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError as error:
        raise BadImage(f"{source}: cannot read ({error.strerror or error})") from None


class FeatureCache:
    """Feature grids on disk: ``ROOT/FINGERPRINT/ab/abcdef….safetensors``, one per image content."""

    def __init__(self, root: str | Path, fingerprint: str):
        self.folder = Path(root).expanduser() / fingerprint

    def path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def get(self, digest: str) -> torch.Tensor | None:
        """The stored grid [C, h, w], or None when there is none (or it cannot be read: then it is recomputed)."""
        path = self.path(digest)
        if not path.is_file():
            return None
        try:
            return load_file(path)["features"]
        except (OSError, SafetensorError, KeyError):
            return None

    def put(self, digest: str, features: torch.Tensor) -> None:
        tensor = features.to(STORED_DTYPE).contiguous()
        atomic_write(self.path(digest), lambda tmp: save_file({"features": tensor}, tmp))


def extract_features(
    images: list[ImageSource],
    features: Callable[[torch.Tensor], torch.Tensor],
    image_size: int,
    cache: FeatureCache | None,
    report: Callable[[int, int], None] = lambda done, total: None,
    batch_size: int = 32,
    mirrored: bool = False,
) -> tuple[torch.Tensor, int]:
    """Feature grids [N, C, h, w] (``STORED_DTYPE``) of ``images`` (``mirrored``: flipped left to right): read from
    ``cache`` where it has them, computed with ``features`` (pixels [B, 3, S, S] → [B, C, h, w]) and stored
    otherwise. → (grids, how many were computed). ``report(done, total)`` follows the computation."""
    digests = [image_digest(source) for source in images]
    found = {i: grid for i, d in enumerate(digests) if cache is not None and (grid := cache.get(d)) is not None}
    missing = [i for i in range(len(images)) if i not in found]
    report(0, len(missing))
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        pixels = torch.stack([image_tensor(open_image(images[i]), image_size, mirrored=mirrored) for i in chunk])
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            grids = features(pixels).to(STORED_DTYPE)  # [B, C, h, w]
        for i, grid in zip(chunk, grids, strict=True):
            found[i] = grid.contiguous()
            if cache is not None:
                cache.put(digests[i], grid)
        report(start + len(chunk), len(missing))
    return torch.stack([found[i] for i in range(len(images))]), len(missing)
