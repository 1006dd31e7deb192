"""Bad recipes, one per row: ``s2s train`` refuses each at load with its exact one-line message and exit 2, before
anything is written (no run directory, no tokenizer). Each row changes one small valid recipe."""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

from s2s.cli import app
from s2s.config import load_recipe


class GONE:
    """A change that removes the key (a class: copies of it are itself)."""


TRANSLATION = {
    "name": "bad",
    "data": {"format": "generated", "generator": {"train_size": 40, "valid_size": 8, "test_size": 8}},
    "tokenizer": {"vocab_size": 40},
    "model": {
        "encoder": {"embedding_size": 16, "hidden_size": 16},
        "decoder": {"embedding_size": 16, "hidden_size": 16},
    },
    "train": {"max_steps": 1, "threads": 1},
}
TEXT_DATA = {"format": "text", "train": {"src": "a.de", "tgt": "a.en"}, "valid": {"src": "a.de", "tgt": "a.en"}}
CLASSIFICATION = {
    "task": "classification",
    "data": {"format": "tsv", "train": {"path": "a.tsv"}, "valid": {"path": "a.tsv"}},
    "tokenizer": {"vocab_size": 16},
    "model": {"encoder": {"embedding_size": 8, "hidden_size": 8}},
    "train": {"max_steps": 1, "threads": 1},
}
CAPTIONING = {
    "task": "captioning",
    "data": {
        "format": "generated",
        "generator": {"train_size": 8, "valid_size": 4, "test_size": 4, "image_size": 32},
        "image_size": 32,
        "workers": 0,
    },
    "tokenizer": {"vocab_size": 20},
    "model": {
        "encoder": {"channels": [8], "output_size": 16},
        "decoder": {"embedding_size": 16, "hidden_size": 16},
    },
    "train": {"max_steps": 1, "threads": 1},
}
FLICKR8K = {
    "format": "flickr8k",
    "image_dir": "data/flickr8k/images",
    "captions": "data/flickr8k/captions.token.txt.gz",
    "train": {"images": "data/flickr8k/train_images.txt"},
    "valid": {"images": "data/flickr8k/dev_images.txt"},
}
HUB = {"format": "hub", "hub_id": "someone/reviews", "train": {"split": "train"}, "valid": {"split": "validation"}}

# (recipe, {key path: new value, or GONE}, the message after "RECIPE: ")
ROWS = {
    "unknown section": (TRANSLATION, {"tokeniser": {}}, "tokeniser: unknown key; did you mean 'tokenizer'?"),
    "unknown key": (
        TRANSLATION,
        {"model.encoder.hiden_size": 8},
        "model.encoder.hiden_size: unknown key; did you mean 'hidden_size'?",
    ),
    "unknown key, nothing close": (
        TRANSLATION,
        {"data.generator.flavour": "dates"},
        "data.generator.flavour: unknown key; known keys: task, train_size, valid_size, test_size, seed, symbols, "
        "train_lengths, test_lengths, lag",
    ),
    "wrong type": (
        TRANSLATION,
        {"train.batch_size": "many"},
        "train.batch_size: input should be a valid integer, unable to parse string as an integer (got 'many')",
    ),
    "out of range": (
        TRANSLATION,
        {"model.encoder.layers": 0},
        "model.encoder.layers: input should be greater than 0 (got 0)",
    ),
    "bad duration": (
        TRANSLATION,
        {"train.max_time": "soon"},
        "train.max_time: 'soon' is not a duration such as 90, 90s, 25m or 1.5h",
    ),
    "bad literal": (
        TRANSLATION,
        {"model.encoder.cell": "lstmm"},
        "model.encoder.cell: 'lstmm' is not one of: gru, lstm, rnn",
    ),
    "bad task": (
        TRANSLATION,
        {"task": "summarise"},
        "task: 'summarise' is not one of: translation, classification, captioning, tagging, language_model",
    ),
    "bad format": (
        TRANSLATION,
        {"data.format": "parquet"},
        "data.format: 'parquet' is not one of: text, tsv, csv, jsonl, hub, generated",
    ),
    "bad labelled format": (
        CLASSIFICATION,
        {"data.format": "text"},
        "data.format: 'text' is not one of: tsv, csv, jsonl, hub",
    ),
    "input feeding without attention": (
        TRANSLATION,
        {"model.decoder.attention": "none"},
        "model.decoder.input_feeding: needs attention; set it to false when attention is 'none'",
    ),
    "an attention penalty without attention": (
        TRANSLATION,
        {"model.decoder.attention": "none", "model.decoder.input_feeding": False, "model.decoder.attention_penalty": 1},
        "model.decoder.attention_penalty: needs attention; set it to 0 when attention is 'none'",
    ),
    "a context gate without attention": (
        TRANSLATION,
        {"model.decoder.attention": "none", "model.decoder.input_feeding": False, "model.decoder.context_gate": True},
        "model.decoder.context_gate: needs attention; set it to false when attention is 'none'",
    ),
    "tied embeddings of two sizes": (
        TRANSLATION,
        {"model.decoder.tie_embeddings": True, "model.decoder.embedding_size": 8},
        "model.decoder.tie_embeddings: needs embedding_size == hidden_size (8 != 16)",
    ),
    "dot attention over a bidirectional encoder": (
        TRANSLATION,
        {"model.decoder.attention": "luong_dot"},
        "model.decoder.attention: luong_dot needs model.decoder.hidden_size (16) equal to the encoder's output size "
        "(32, model.encoder.hidden_size × 2 directions); use luong_general or bahdanau",
    ),
    "dot attention over an image encoder": (
        CAPTIONING,
        {"model.decoder.attention": "luong_dot", "model.encoder.output_size": 24},
        "model.decoder.attention: luong_dot needs model.decoder.hidden_size (16) equal to the encoder's output size "
        "(24, model.encoder.output_size); use luong_general or bahdanau",
    ),
    "text data with a hub key": (
        TRANSLATION,
        {"data": {**TEXT_DATA, "hub_id": "bentrevett/multi30k"}},
        "data.hub_id: does not apply to data.format 'text'",
    ),
    "text data with a column file": (
        TRANSLATION,
        {"data": {**TEXT_DATA, "train": {"src": "a.de", "tgt": "a.en", "path": "a.tsv"}}},
        "data.train.path: does not apply to data.format 'text' (it takes src and tgt)",
    ),
    "column file with a generator": (
        TRANSLATION,
        {"data": {"format": "tsv", "train": {"path": "a.tsv"}, "valid": {"path": "a.tsv"}, "generator": {}}},
        "data.generator: does not apply to data.format 'tsv'",
    ),
    "labelled file with a hub key": (
        CLASSIFICATION,
        {"data.hub_config": "plain_text"},
        "data.hub_config: does not apply to data.format 'tsv'",
    ),
    "labelled hub split given as a file": (
        CLASSIFICATION,
        {"data": {**HUB, "train": {"path": "a.tsv"}}},
        "data.train.path: does not apply to data.format 'hub' (it takes split) (and 1 more problem)",
    ),
    "caption table with a captions file": (
        CAPTIONING,
        {"data": {"format": "jsonl", "train": {"path": "a.jsonl"}, "valid": {"path": "a.jsonl"}, "captions": "c.txt"}},
        "data.captions: does not apply to data.format 'jsonl'",
    ),
    "generated pictures with an image folder": (
        CAPTIONING,
        {"data.image_dir": "pictures"},
        "data.image_dir: does not apply to data.format 'generated'",
    ),
    "missing train split": (
        TRANSLATION,
        {"data": {**TEXT_DATA, "train": GONE}},
        "data.train: required key is missing",
    ),
    "missing target file key": (
        TRANSLATION,
        {"data": {**TEXT_DATA, "valid": {"src": "a.de"}}},
        "data.valid.tgt: required key is missing",
    ),
    "missing hub id": (CLASSIFICATION, {"data": {**HUB, "hub_id": GONE}}, "data.hub_id: required key is missing"),
    "missing valid split": (
        CLASSIFICATION,
        {"data.valid": GONE},
        "data.valid: required key is missing; or hold out training rows with data.holdout: N",
    ),
    "missing valid split of pictures": (
        CAPTIONING,
        {"data": {**FLICKR8K, "valid": GONE}},
        "data.valid: required key is missing",
    ),
    "valid split and holdout": (
        CLASSIFICATION,
        {"data.holdout": 10},
        "data.holdout: give either a valid split or holdout, not both",
    ),
    "test split and holdout_test": (
        CLASSIFICATION,
        {"data.test": {"path": "a.tsv"}, "data.holdout_test": 10},
        "data.holdout_test: give either a test split or holdout_test, not both",
    ),
    "pretraining a deep bidirectional encoder": (
        CLASSIFICATION,
        {"model.encoder.layers": 2, "pretrain": {"max_time": "1m"}},
        "pretrain: needs model.encoder.layers: 1 or bidirectional: false (above the first layer, each direction of a "
        "bidirectional encoder reads the other's view of the words it is to predict)",
    ),
    "pretraining an ensemble": (
        CLASSIFICATION,
        {"model.members": 3, "pretrain": {"max_time": "1m"}},
        "pretrain: needs model.members: 1 (the pretraining gives one encoder its starting weights)",
    ),
    "members splitting batches without members": (
        CLASSIFICATION,
        {"model.member_batches": "split"},
        "model.member_batches: split shares each batch among members; it needs model.members above 1",
    ),
    "an ensemble of none": (
        CLASSIFICATION,
        {"model.members": 0},
        "model.members: input should be greater than or equal to 1 (got 0)",
    ),
    "pretraining longer than training": (
        CLASSIFICATION,
        {"pretrain": {"max_time": "5m"}, "train.max_time": "5m"},
        "pretrain.max_time: must be shorter than train.max_time, which it is part of",
    ),
    "pretraining without a time": (
        CLASSIFICATION,
        {"pretrain": {"lr": 0.01}},
        "pretrain.max_time: required key is missing",
    ),
    "missing file": (
        TRANSLATION,
        {"data": {**TEXT_DATA, "valid": {"src": "nope.de", "tgt": "a.en"}}},
        "data.valid.src: file not found: nope.de",
    ),
    "missing file that get_data fills": (
        TRANSLATION,
        {"data": {**TEXT_DATA, "train": {"src": "data/multi30k/train.de.gz", "tgt": "data/multi30k/train.en.gz"}}},
        "data.train.src: file not found: data/multi30k/train.de.gz; fill it with: python tools/get_data.py multi30k",
    ),
    "missing labelled file that get_data fills": (
        CLASSIFICATION,
        {"data.train.path": "data/imdb/train.jsonl.gz", "data.format": "jsonl"},
        "data.train.path: file not found: data/imdb/train.jsonl.gz; fill it with: python tools/get_data.py imdb",
    ),
    "missing image folder that get_data fills": (
        CAPTIONING,
        {"data": FLICKR8K},
        "data.image_dir: no such folder: data/flickr8k/images; fill it with: python tools/get_data.py flickr8k",
    ),
    "keep_best_by of another task": (
        TRANSLATION,
        {"train.keep_best_by": "bleu4"},
        "train.keep_best_by: 'bleu4' is not one of: bleu, chrf, exact_match, token_accuracy, loss",
    ),
    "average more checkpoints than are kept": (
        TRANSLATION,
        {"train.average_last": 6, "train.keep_last": 4},
        "train.average_last: 6 checkpoints, but train.keep_last keeps only 4; set keep_last to at least 6",
    ),
    "lr_patience 0": (
        TRANSLATION,
        {"train.lr_patience": 0},
        "train.lr_patience: must be at least 1; to turn learning-rate decay off, set train.lr_decay: 1.0",
    ),
    "fp16 on the CPU": (
        TRANSLATION,
        {"train.precision": "fp16", "train.device": "cpu"},
        "train.precision: fp16 needs a CUDA device, and train.device is cpu; use bf16 on the CPU",
    ),
    "tiny decoder dropout": (
        TRANSLATION,
        {"model.decoder.dropout": 0.001},
        "model.decoder.dropout: 0.001 would drop nothing (masks are drawn in steps of 1/256); use 0 or at least 0.002",
    ),
    "tiny classifier head dropout": (
        CLASSIFICATION,
        {"model.head.dropout": 0.0015},
        "model.head.dropout: 0.0015 would drop nothing (masks are drawn in steps of 1/256); use 0 or at least 0.002",
    ),
    "tiny image encoder dropout": (
        CAPTIONING,
        {"model.encoder.dropout": 1e-4},
        "model.encoder.dropout: 0.0001 would drop nothing (masks are drawn in steps of 1/256); use 0 or at least 0.002",
    ),
    "train_last without efficientnet": (
        CAPTIONING,
        {"model.encoder.train_last": 2},
        "model.encoder.train_last: only for the backbones efficientnet_lite0, efficientnet_lite1, efficientnet_lite2",
    ),
    "train_last with all blocks training": (
        CAPTIONING,
        {"model.encoder.backbone": "efficientnet_lite0", "model.encoder.freeze": False, "model.encoder.train_last": 2},
        "model.encoder.train_last: needs freeze: true (without it all blocks train)",
    ),
    "pretrained weights for the built-in resnet": (
        CAPTIONING,
        {"model.encoder.pretrained": "default"},
        "model.encoder.pretrained: the built-in resnet trains from scratch; use a pretrained backbone",
    ),
    "augmenting the pictures of a frozen encoder": (
        CAPTIONING,
        {"model.encoder.backbone": "efficientnet_lite0", "data.augment": True},
        "data.augment: a frozen encoder's features (with train_last, those entering its fine-tuned blocks) are "
        "computed once per image, so training images cannot be augmented; set data.augment: false (or "
        "model.encoder.freeze: false)",
    ),
    "a learning rate for fine-tuned blocks when none are": (
        CAPTIONING,
        {"model.encoder.backbone": "efficientnet_lite0", "model.encoder.train_last_lr": 0.5},
        "model.encoder.train_last_lr: sets the learning rate of the blocks train_last fine-tunes, and it is 0",
    ),
    "augmenting the pictures of an encoder that fine-tunes its last blocks": (
        CAPTIONING,
        {"model.encoder.backbone": "efficientnet_lite0", "model.encoder.train_last": 1, "data.augment": True},
        "data.augment: a frozen encoder's features (with train_last, those entering its fine-tuned blocks) are "
        "computed once per image, so training images cannot be augmented; set data.augment: false (or "
        "model.encoder.freeze: false)",
    ),
    "a self-critical stage that does not say when it starts": (
        CAPTIONING,
        {"self_critical": {"lr": 1e-4}},
        "self_critical: give after_steps or after_time (one of them): when the stage starts",
    ),
    "a self-critical stage that starts after the whole run's time": (
        CAPTIONING,
        {"train.max_time": "10m", "self_critical": {"after_time": "10m"}},
        "self_critical.after_time: must be shorter than train.max_time, which ends the whole run",
    ),
    "a self-critical stage for an ensemble": (
        CAPTIONING,
        {"model.members": 2, "self_critical": {"after_steps": 100}},
        "self_critical: needs model.members: 1 (each member would need its own samples)",
    ),
    "a self-critical baseline from one sample": (
        CAPTIONING,
        {"self_critical": {"after_steps": 100, "samples": 1}},
        "self_critical.samples: input should be greater than or equal to 2 (got 1)",
    ),
    "a self-critical reward the toolkit does not have": (
        CAPTIONING,
        {"self_critical": {"after_steps": 100, "reward": "rouge"}},
        "self_critical.reward: 'rouge' is not one of: cider_d, bleu4",
    ),
    "a self-critical stage after the last step": (
        CAPTIONING,
        {"self_critical": {"after_steps": 1}},
        "self_critical.after_steps: must be below train.max_steps, which ends the whole run",
    ),
}


def changed(recipe: dict, changes: dict) -> dict:
    tree = copy.deepcopy(recipe)
    for path, value in changes.items():
        *sections, key = path.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = copy.deepcopy(value)
    return without_gone(tree)


def without_gone(node):
    if isinstance(node, dict):
        return {key: without_gone(value) for key, value in node.items() if value is not GONE}
    return node


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The files the valid recipes name, in a fresh working directory (no data/ folder)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "a.en").write_text("one\ntwo\n")
    (tmp_path / "a.tsv").write_text("text\tlabel\ngood\tpos\nbad\tneg\n")
    return tmp_path


@pytest.mark.parametrize("recipe", [TRANSLATION, {**TRANSLATION, "data": TEXT_DATA}, CLASSIFICATION, CAPTIONING])
def test_the_recipes_the_rows_change_are_valid(workdir, recipe):
    (workdir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    load_recipe("recipe.yaml")


@pytest.mark.parametrize("row", ROWS, ids=list(ROWS))
def test_a_bad_recipe_is_refused_at_load_with_one_exact_line(workdir, row):
    recipe, changes, message = ROWS[row]
    (workdir / "recipe.yaml").write_text(yaml.safe_dump(changed(recipe, changes), allow_unicode=True))
    result = CliRunner().invoke(app, ["train", "recipe.yaml", "--run-dir", "run"])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"s2s: error: recipe.yaml: {message}\n"
    assert not (workdir / "run").exists()
