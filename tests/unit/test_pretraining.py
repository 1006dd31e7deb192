"""Language-model pretraining of a classifier's encoder (``pretrain``): each direction predicts the words it has
not read, the loss falls, and the classifier starts from the encoder it pretrained."""

from __future__ import annotations

import pytest
import torch

from s2s.config import EncoderConfig, PretrainConfig, load_recipe
from s2s.data.batching import collate_labelled
from s2s.models import build_encoder
from s2s.pipelines import pipeline_for
from s2s.pretraining import BidirectionalLanguageModel, pretrain_encoder
from s2s.train import Events
from tests.helpers import toy_sentiment_recipe, write_recipe


def language_model(reverse_source: bool = False, bidirectional: bool = True) -> BidirectionalLanguageModel:
    torch.manual_seed(0)
    config = EncoderConfig(
        cell="lstm", embedding_size=8, hidden_size=8, dropout=0.0, bidirectional=bidirectional,
        reverse_source=reverse_source,
    )  # fmt: skip
    return BidirectionalLanguageModel(build_encoder(config, vocab_size=30), vocab_size=30).eval()


def logits_per_direction(model: BidirectionalLanguageModel, text: list[int]) -> list[torch.Tensor]:
    readings = model.readings(collate_labelled([text], None, [0]))
    return [output(states[0]) for output, (states, _) in zip(model.output, readings, strict=False)]


@pytest.mark.parametrize("reverse_source", [False, True])
def test_each_direction_predicts_a_word_without_having_read_it(reverse_source):
    model = language_model(reverse_source)
    text, changed_at = [5, 6, 7, 8, 9, 10], 3
    before = logits_per_direction(model, text)
    after = logits_per_direction(model, [*text[:changed_at], 20, *text[changed_at + 1 :]])
    rightwards, leftwards = (1, 0) if reverse_source else (0, 1)  # reading reversed, the first direction goes left
    # left to right: row t predicts word t + 1, so the rows before changed_at predict it or earlier words
    torch.testing.assert_close(before[rightwards][:changed_at], after[rightwards][:changed_at])
    assert not torch.allclose(before[rightwards][changed_at:], after[rightwards][changed_at:])
    # right to left: row t (the state at word t + 1) predicts word t, so rows from changed_at on predict it or later
    torch.testing.assert_close(before[leftwards][changed_at:], after[leftwards][changed_at:])
    assert not torch.allclose(before[leftwards][: changed_at - 1], after[leftwards][: changed_at - 1])


def test_padding_is_never_a_target_and_a_text_scores_alike_alone_or_batched():
    model = language_model()
    texts = [list(range(5, 25)), [11, 12], [13, 14, 15]]
    targets = [predicted for _, predicted in model.readings(collate_labelled(texts, None, [0, 1, 2]))]
    assert [int(t.ne(0).sum()) for t in targets] == [19 + 1 + 2] * 2  # each text predicts length - 1 words
    together = model(collate_labelled(texts, None, [0, 1, 2]))
    alone = [model(collate_labelled([t], None, [0])) for t in texts]
    torch.testing.assert_close(together, sum(loss * (len(t) - 1) for loss, t in zip(alone, texts, strict=True)) / 22)


def test_a_one_directional_encoder_has_one_output_layer():
    model = language_model(bidirectional=False)
    assert len(model.output) == 1 and len(model.readings(collate_labelled([[5, 6, 7]], None, [0]))) == 1


def test_pretraining_lowers_the_language_model_loss_of_the_texts():
    texts = [[5 + (i + k) % 7 for k in range(8)] for i in range(64)]  # seven rotations of one cycle: learnable
    batch = collate_labelled(texts, None, list(range(64)))
    losses = []
    for steps in (1, 60):
        torch.manual_seed(0)
        encoder = build_encoder(EncoderConfig(cell="gru", embedding_size=8, hidden_size=16, dropout=0.0), 30)
        config = PretrainConfig(max_time=60, max_steps=steps, lr=0.01, batch_size=16)
        model = pretrain_encoder(encoder, 30, texts, config, 1, torch.device("cpu"), None, Events())
        assert model.encoder is encoder
        with torch.no_grad():
            losses.append(float(model.eval()(batch)))
    assert losses[1] < losses[0] / 3


def test_the_classifier_starts_from_the_encoder_it_pretrained(tmp_path):
    tree = toy_sentiment_recipe(tmp_path)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", {**tree, "pretrain": {"max_time": 60, "max_steps": 5}}))
    pipeline = pipeline_for(recipe)
    splits = pipeline.read_splits(Events())
    (tmp_path / "run").mkdir()
    assets = pipeline.prepare_assets(tmp_path / "run", splits, Events())
    model = pipeline.build_model(assets)
    assert assets.encoder is not None
    for name, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, assets.encoder[name])
    assert pipeline.load_assets(tmp_path / "run").encoder is None  # a resumed run starts from its checkpoint
