"""The feature cache of a frozen backbone: hits, misses, invalidation by image content and by backbone, whole
entries only, and a cache that is safe to delete. A tiny convolution stands in for the CNN."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image
from torch import nn

from s2s.data.images import image_tensor, open_image
from s2s.features import FeatureCache, backbone_fingerprint, extract_features, image_digest


class Counting(nn.Module):
    """A fixed 'backbone' that counts the images it sees."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 8, stride=8)
        self.seen = 0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        self.seen += len(pixels)
        return self.conv(pixels)


def photos(folder, colours=((200, 30, 30), (30, 200, 30), (30, 30, 200))):
    paths = []
    for k, colour in enumerate(colours):
        Image.new("RGB", (20, 16), colour).save(folder / f"p{k}.png")
        paths.append(folder / f"p{k}.png")
    return paths


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "images").mkdir()
    backbone = Counting()
    cache = FeatureCache(tmp_path / "cache", backbone_fingerprint("counting", backbone.state_dict(), 16))
    return photos(tmp_path / "images"), backbone, cache


def extract(paths, backbone, cache):
    with torch.no_grad():
        return extract_features(paths, backbone, 16, cache, batch_size=2)


def test_the_first_pass_computes_every_grid_and_the_second_reads_them_all(setup):
    paths, backbone, cache = setup
    first, computed = extract(paths, backbone, cache)
    assert computed == 3 and backbone.seen == 3 and first.shape == (3, 4, 2, 2)
    again, computed = extract(paths, backbone, cache)
    assert computed == 0 and backbone.seen == 3  # the CNN did not run
    assert torch.equal(first, again)


def test_a_changed_image_is_a_miss_and_never_reads_the_old_grid(setup):
    paths, backbone, cache = setup
    before, _ = extract(paths, backbone, cache)
    Image.new("RGB", (20, 16), (250, 250, 0)).save(paths[1])  # same name, new content
    after, computed = extract(paths, backbone, cache)
    assert computed == 1
    assert torch.equal(after[[0, 2]], before[[0, 2]]) and not torch.equal(after[1], before[1])
    fresh, _ = extract(paths, Counting(), None)  # no cache: what the backbone gives now
    assert torch.equal(after, fresh)


def test_the_same_content_under_another_name_is_a_hit(setup, tmp_path):
    paths, backbone, cache = setup
    extract(paths, backbone, cache)
    shutil.copy(paths[0], tmp_path / "renamed.png")
    _, computed = extract([tmp_path / "renamed.png"], backbone, cache)
    assert computed == 0


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda b: ("counting", Counting(seed=1), 16), id="other weights"),
        pytest.param(lambda b: ("another-name", b, 16), id="other backbone name"),
        pytest.param(lambda b: ("counting", b, 32), id="other image size"),
    ],
)
def test_another_backbone_or_preprocessing_never_reads_these_entries(setup, other):
    paths, backbone, cache = setup
    extract(paths, backbone, cache)
    name, net, size = other(backbone)
    assert backbone_fingerprint(name, net.state_dict(), size) != backbone_fingerprint(
        "counting", backbone.state_dict(), 16
    )


def test_an_entry_that_cannot_be_read_is_computed_again(setup):
    paths, backbone, cache = setup
    good, _ = extract(paths, backbone, cache)
    cache.path(image_digest(paths[2])).write_bytes(b"half a file")
    again, computed = extract(paths, backbone, cache)
    assert computed == 1 and torch.equal(again, good)
    assert extract(paths, backbone, cache)[1] == 0  # and it was written again, whole


def test_entries_are_whole_files_and_deleting_the_cache_is_safe(setup):
    paths, backbone, cache = setup
    first, _ = extract(paths, backbone, cache)
    files = sorted(p.name for p in cache.folder.rglob("*") if p.is_file())
    assert files == sorted(f"{image_digest(p)}.safetensors" for p in paths)  # no temporary files left
    shutil.rmtree(cache.folder.parent)
    again, computed = extract(paths, backbone, cache)
    assert computed == 3 and torch.equal(again, first)


def test_in_memory_pictures_are_keyed_by_their_pixels():
    red, also_red, blue = (Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (255, 0, 0), (0, 0, 255)))
    assert image_digest(red) == image_digest(also_red) != image_digest(blue)


def test_progress_is_reported_while_computing(setup):
    paths, backbone, cache = setup
    seen = []
    with torch.no_grad():
        extract_features(paths, backbone, 16, cache, lambda done, total: seen.append((done, total)), batch_size=2)
    assert seen == [(0, 3), (2, 3), (3, 3)]


def test_mirrored_pictures_have_grids_of_their_own_apart_from_the_plain_ones(setup):
    paths, backbone, cache = setup
    picture = Image.new("RGB", (20, 16), (0, 0, 0))
    picture.paste((200, 30, 30), (0, 0, 8, 16))  # a stripe on the left: the picture is not symmetric
    picture.save(paths[0])
    mirrored_cache = FeatureCache(
        cache.folder.parent, backbone_fingerprint("counting", backbone.state_dict(), 16, mirrored=True)
    )
    assert mirrored_cache.folder != cache.folder
    plain, _ = extract(paths, backbone, cache)
    with torch.no_grad():
        mirrored, computed = extract_features(paths, backbone, 16, mirrored_cache, mirrored=True)
        flipped = backbone(torch.stack([image_tensor(open_image(p), 16).flip(-1) for p in paths]))
    assert computed == 3  # none read from the plain grids
    assert torch.equal(mirrored, flipped.to(mirrored.dtype)) and not torch.equal(mirrored[0], plain[0])
