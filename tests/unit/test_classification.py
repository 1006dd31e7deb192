"""Classification (sentiment): pooling, labels, scores, and what a toy run learns."""

from __future__ import annotations

import json

import pytest
import torch

from s2s.config import (
    ClassifierModelConfig,
    EncoderConfig,
    HeadConfig,
    LabelledTextData,
    TrainConfig,
    load_recipe,
)
from s2s.data.batching import collate_labelled
from s2s.data.labelled import load_labelled
from s2s.errors import DataError, RecipeError
from s2s.metrics import classification_scores
from s2s.models import build_classifier
from s2s.pipelines import pipeline_for
from s2s.pipelines.classification import label_set
from s2s.runs import load_run
from s2s.train import Events, Trainer, epoch_batches
from tests.helpers import toy_sentiment_recipe, write_recipe, write_tsv

# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_every_pooling_gives_each_text_the_same_label_scores_in_a_padded_batch_as_alone(pooling, cell):
    torch.manual_seed(0)
    config = ClassifierModelConfig(
        encoder=EncoderConfig(cell=cell, embedding_size=8, hidden_size=8, dropout=0.0),
        head=HeadConfig(pooling=pooling, hidden_size=6, dropout=0.0),
    )
    model = build_classifier(config, vocab_size=30, n_labels=3).eval()
    texts = [list(range(5, 22)), [11, 12], [13, 14, 15]]
    batch = collate_labelled(texts, None, [0, 1, 2])
    assert batch.src.size(1) > 17  # the width is rounded up: even the longest text has padding after it
    together, weights = model.classify(batch.src, batch.src_lengths)
    assert together.shape == (3, 3)
    for row, text in enumerate(texts):
        alone, _ = model.classify(torch.tensor([text]), torch.tensor([len(text)]))
        torch.testing.assert_close(together[row], alone[0], rtol=1e-5, atol=1e-6)
    if pooling == "attention":
        torch.testing.assert_close(weights.sum(-1), torch.ones(3))
        assert weights[1, 2:].eq(0).all() and weights[2, 3:].eq(0).all()  # nothing on padding
    else:
        assert weights is None


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities():
    torch.manual_seed(0)
    config = ClassifierModelConfig(
        encoder=EncoderConfig(embedding_size=8, hidden_size=8, dropout=0.0),
        head=HeadConfig(pooling="attention", dropout=0.0),
        members=3,
    )
    model = build_classifier(config, vocab_size=30, n_labels=3).eval()
    assert len(model.members) == 3
    first, second = (member.encoder.embed.weight for member in model.members[:2])
    assert not torch.equal(first, second)  # each member starts from its own weights
    batch = collate_labelled([list(range(5, 12)), [11, 12]], None, [0, 1])
    log_mean, weights = model.classify(batch.src, batch.src_lengths)
    alone = [member.classify(batch.src, batch.src_lengths) for member in model.members]
    torch.testing.assert_close(log_mean.softmax(-1), torch.stack([p.softmax(-1) for p, _ in alone]).mean(0))
    torch.testing.assert_close(weights, torch.stack([w for _, w in alone]).mean(0))


def test_each_ensemble_member_learns_from_its_own_loss_alone():
    torch.manual_seed(0)
    config = ClassifierModelConfig(
        encoder=EncoderConfig(embedding_size=8, hidden_size=8, dropout=0.0, word_dropout=0.0),
        head=HeadConfig(dropout=0.0),
        members=2,
    )
    model = build_classifier(config, vocab_size=30, n_labels=2)
    batch = collate_labelled([list(range(5, 12)), [11, 12], [7, 8, 9]], [0, 1, 1], [0, 1, 2])
    model(batch).backward()
    for member in model.members:
        together = [p.grad.clone() for p in member.parameters()]
        member.zero_grad()
        (member(batch) / 2).backward()
        for grad, parameter in zip(together, member.parameters(), strict=True):
            torch.testing.assert_close(grad, parameter.grad)


@pytest.mark.parametrize(
    "rows, shares",
    [(7, [[0, 3, 6], [1, 4], [2, 5]]), (2, [[0], [1], [0]])],  # a batch of fewer rows than members: one row each
    ids=["rows k, k + 3, ...", "fewer rows than members"],
)
def test_with_split_batches_each_member_trains_on_its_own_share_of_the_batch(rows, shares):
    torch.manual_seed(0)
    config = ClassifierModelConfig(
        encoder=EncoderConfig(embedding_size=8, hidden_size=8, dropout=0.0, word_dropout=0.0),
        head=HeadConfig(dropout=0.0),
        members=3,
        member_batches="split",
    )
    model = build_classifier(config, vocab_size=30, n_labels=2)
    texts = [list(range(5, 5 + n)) for n in (7, 2, 3, 9, 4, 5, 6)][:rows]
    batch = collate_labelled(texts, [0, 1, 1, 0, 1, 0, 0][:rows], list(range(rows)))
    model(batch).backward()
    for member, share in zip(model.members, shares, strict=True):
        together = [p.grad.clone() for p in member.parameters()]
        member.zero_grad()
        own = collate_labelled([texts[i] for i in share], [batch.labels[i].item() for i in share], share)
        (member(own) / 3).backward()
        for grad, parameter in zip(together, member.parameters(), strict=True):
            torch.testing.assert_close(grad, parameter.grad)


# ---------------------------------------------------------------- labels and scores


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["1", "0", "10", "2", "1"], ["0", "1", "2", "10"]),  # integers in numeric order
        (["pos", "neg", "neutral"], ["neg", "neutral", "pos"]),
    ],
)
def test_the_label_set_is_ordered_stably(labels, expected):
    assert label_set(labels) == expected


def test_scores_count_a_hand_made_confusion_matrix():
    gold, predicted = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    scores = classification_scores(gold, predicted, ["a", "b", "c"])
    assert scores["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert scores["accuracy"] == round(100 * 4 / 6, 2)
    f1 = [2 * 2 / (2 + 3), 2 * 1 / (2 + 2), 2 * 1 / (2 + 1)]  # 2·TP / (predicted + gold) per label
    assert scores["macro_f1"] == round(100 * sum(f1) / 3, 2)


def test_labels_are_read_with_their_file_and_line_and_a_missing_one_is_named(tmp_path):
    good = write_tsv(tmp_path / "good.tsv", [("nice one", "pos"), ("dull", "neg")])
    data = LabelledTextData.of(train={"path": str(good)}, valid={"path": str(good)})
    rows = load_labelled(data, "train")
    assert rows.labels == ["pos", "neg"] and rows.places == [f"{good}:2", f"{good}:3"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\nnice one\tpos\nno label here\t\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{bad}:3: no label in column 'label'$"):
        load_labelled(LabelledTextData.of(train={"path": str(bad)}), "train")


def test_holdout_splits_the_training_file_the_same_way_every_time_and_never_overlaps(tmp_path):
    rows = [(f"text {i}", "pos" if i % 2 else "neg") for i in range(50)]
    path = write_tsv(tmp_path / "all.tsv", rows)
    data = LabelledTextData.of(train={"path": str(path)}, holdout=10, holdout_seed=4)
    train, valid = load_labelled(data, "train"), load_labelled(data, "valid")
    assert len(valid.texts) == 10 and len(train.texts) == 40
    assert sorted(train.texts + valid.texts) == sorted(text for text, _ in rows)
    assert load_labelled(data, "valid").texts == valid.texts


def test_holdout_test_holds_out_a_test_part_beside_the_valid_part_and_the_same_rows_as_a_valid_draw(tmp_path):
    rows = [(f"text {i}", "pos" if i % 2 else "neg") for i in range(50)]
    path = write_tsv(tmp_path / "all.tsv", rows)
    both = LabelledTextData.of(train={"path": str(path)}, holdout=8, holdout_test=10, holdout_seed=4)
    train, valid, test = (load_labelled(both, split).texts for split in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (32, 8, 10)
    assert sorted(train + valid + test) == sorted(text for text, _ in rows)
    # a run that held 10 rows out for validation reported on the rows this test part holds
    valid_only = LabelledTextData.of(train={"path": str(path)}, holdout=10, holdout_seed=4)
    assert load_labelled(valid_only, "valid").texts == test
    with pytest.raises(DataError, match=r"data.holdout = 8 \+ data.holdout_test = 42 leaves no training rows"):
        load_labelled(LabelledTextData.of(train={"path": str(path)}, holdout=8, holdout_test=42), "train")


# ---------------------------------------------------------------- subword regularisation


@pytest.fixture
def sampled_examples(tmp_path):
    """The toy reviews' training and valid examples with ``tokenizer.sampling`` set."""
    tree = toy_sentiment_recipe(tmp_path)
    tree["tokenizer"] = {"vocab_size": 80, "sampling": 0.2}
    tree["data"]["max_length"] = 100
    pipeline = pipeline_for(load_recipe(write_recipe(tmp_path / "recipe.yaml", tree)))
    splits = pipeline.read_splits(Events())
    (tmp_path / "run").mkdir()
    assets = pipeline.prepare_assets(tmp_path / "run", splits, Events())
    return splits, assets.tokenizer, pipeline.examples(assets, splits, Events())


def epoch(train, number: int, batch_size: int = 32, by_tokens: bool = False) -> list:
    """The batches the trainer would draw in epoch ``number`` (seed 1)."""
    config = TrainConfig(seed=1, batch_size=batch_size, batch_by="tokens" if by_tokens else "sentences")
    return [train.batch(indices) for indices in epoch_batches(config, train, number)]


def test_sampling_segments_the_training_texts_anew_each_epoch_into_the_same_texts(sampled_examples):
    (train_rows, _), tokenizer, (train, _) = sampled_examples
    first, second = epoch(train, 0), epoch(train, 1)
    segmentations = [{}, {}]
    for batches, seen in zip((first, second), segmentations, strict=True):
        for batch in batches:
            ids = [row[:length].tolist() for row, length in zip(batch.src, batch.src_lengths, strict=True)]
            assert tokenizer.decode(ids) == [train_rows.texts[i] for i in batch.indices]
            assert batch.labels.tolist() == [train.labels[i] for i in batch.indices]
            seen.update(zip(batch.indices, map(tuple, ids), strict=True))
    assert sorted(segmentations[0]) == list(range(len(train)))  # every text once an epoch
    differ = sum(segmentations[0][i] != segmentations[1][i] for i in range(len(train)))
    assert differ > len(train) // 4  # other segmentations of the same texts


def test_an_epoch_is_bucketed_by_the_lengths_of_the_segmentations_it_trains_on(sampled_examples):
    _, _, (train, _) = sampled_examples
    budget = 300  # padded tokens a batch may hold
    batches = epoch(train, 0, batch_size=budget, by_tokens=True)
    assert len(batches) > 10
    for batch in batches:
        assert len(batch.indices) * int(batch.src_lengths.max()) <= budget


def test_validation_reads_the_best_segmentation(sampled_examples):
    (_, valid_rows), tokenizer, (_, valid) = sampled_examples
    assert valid.ids == tokenizer.encode(valid_rows.texts)
    assert valid.batch([0, 1]).src.tolist() == valid.batch([0, 1]).src.tolist()


def test_an_epoch_drawn_again_samples_the_same_segmentations(sampled_examples):
    _, _, (train, _) = sampled_examples
    before = epoch(train, 3)
    epoch(train, 4)
    again = epoch(train, 3)  # within one process: SentencePiece's draws for a seed differ between processes
    assert [b.indices for b in before] == [b.indices for b in again]
    assert all(torch.equal(a.src, b.src) for a, b in zip(before, again, strict=True))


def test_sampling_needs_sentencepiece_pieces(tmp_path):
    tree = toy_sentiment_recipe(tmp_path)
    tree["tokenizer"] = {"type": "char", "sampling": 0.2}
    with pytest.raises(RecipeError, match="tokenizer.sampling: samples SentencePiece segmentations"):
        load_recipe(write_recipe(tmp_path / "recipe.yaml", tree))


# ---------------------------------------------------------------- a trained run


def test_training_learns_the_toy_task_and_keeps_the_labels_with_the_model(trained_classifier):
    assert json.loads((trained_classifier / "labels.json").read_text()) == ["neg", "pos"]
    classifier = load_run(trained_classifier, task="classification").predictor
    predictions = classifier.classify(["the film was great", "a dull story", "good"])
    assert [p.label for p in predictions] == ["pos", "neg", "pos"]
    for p in predictions:
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert p.probability == max(p.probabilities.values()) > 0.5


def test_an_ensemble_run_trains_saves_and_predicts_as_one_model(tmp_path):
    recipe = toy_sentiment_recipe(tmp_path)
    recipe["model"]["members"] = 2
    torch.manual_seed(0)
    Trainer(load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe)), tmp_path / "run").run()
    classifier = load_run(tmp_path / "run", task="classification").predictor
    assert len(classifier.model.members) == 2
    predictions = classifier.classify(["the film was great", "a dull story"])
    assert [p.label for p in predictions] == ["pos", "neg"]
    assert sum(predictions[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_the_shipped_sentiment_recipes_load():
    for name in ("sentiment", "sentiment-imdb"):
        recipe = load_recipe(f"recipes/{name}.yaml", check_files=False)
        assert recipe.task == "classification" and recipe.train.keep_best_by == "accuracy"
