"""Captioning: image–caption layouts, unreadable images, multi-reference BLEU, the shared decoder and search."""

from __future__ import annotations

import gzip
import json
import sys

import pytest
import torch
from PIL import Image

from s2s.config import CaptionModelConfig, DecoderConfig, ImageCaptionData, ImageEncoderConfig, load_recipe
from s2s.data.images import BadImage, ImageCaptions, image_tensor, load_captioned, mirror_caption, open_image
from s2s.data.shapes import shapes_split
from s2s.errors import DataError, RecipeError
from s2s.metrics import caption_scores
from s2s.models import Seq2Seq, build_captioner
from s2s.modules.decoders import RNNDecoder
from s2s.pipelines.captioning import mirrored_ids, readable
from s2s.search import Sampling, beam_search, greedy_search, search
from tests.helpers import Messages


def save_image(path, colour=(200, 30, 30), size=(40, 30)):
    Image.new("RGB", size, colour).save(path)
    return path


# ---------------------------------------------------------------- layouts


def test_flickr8k_layout_groups_every_caption_of_an_image(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        save_image(tmp_path / name)
    lines = ["a.jpg#0\tA dog .", "a.jpg#1\tA brown dog", "b.jpg#0\tTwo cats", "c.jpg#0\tA bird"]
    captions = tmp_path / "captions.token.txt.gz"
    captions.write_bytes(gzip.compress("\n".join(lines).encode()))
    (tmp_path / "train.txt").write_text("a.jpg\nb.jpg\n")
    data = ImageCaptionData.of(
        image_dir=str(tmp_path), captions=str(captions), train={"images": str(tmp_path / "train.txt")}
    )
    split = load_captioned(data, "train")
    assert split.images == [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    assert split.captions == [["A dog .", "A brown dog"], ["Two cats"]]


def test_flickr8k_layout_names_a_listed_image_without_captions(tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a.jpg#0\tA dog\n")
    (tmp_path / "train.txt").write_text("a.jpg\nmissing.jpg\n")
    data = ImageCaptionData.of(
        image_dir=str(tmp_path), captions=str(captions), train={"images": str(tmp_path / "train.txt")}
    )
    with pytest.raises(DataError, match=f"^{tmp_path / 'train.txt'}:2: missing.jpg has no caption in {captions}$"):
        load_captioned(data, "train")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_column_layouts_have_one_row_per_caption_and_paths_relative_to_the_table(tmp_path, fmt):
    rows = [("x.png", "a red thing"), ("y.png", "a blue thing"), ("x.png", "something red")]
    path = tmp_path / f"train.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in rows))
    else:
        path.write_text("image,caption\n" + "".join(f"{i},{c}\n" for i, c in rows))
    split = load_captioned(ImageCaptionData.of(format=fmt, train={"path": str(path)}), "train")
    assert split.images == [tmp_path / "x.png", tmp_path / "y.png"]
    assert split.captions == [["a red thing", "something red"], ["a blue thing"]]


def test_the_shapes_set_is_reproducible_and_each_picture_has_both_points_of_view():
    first, again = shapes_split(5, 32, seed=7), shapes_split(5, 32, seed=7)
    assert [c for _, c in first] == [c for _, c in again]
    assert all(
        torch.equal(image_tensor(a, 32), image_tensor(b, 32)) for (a, _), (b, _) in zip(first, again, strict=True)
    )
    inverse = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
    for _, (one, other) in first:
        for relation, opposite in inverse.items():
            if f" {relation} " in one:
                subject, obj = one.split(f" {relation} ")
                assert other == f"{obj} {opposite} {subject}"


# ---------------------------------------------------------------- unreadable images


def test_unreadable_images_are_named_with_what_is_wrong(tmp_path):
    good = save_image(tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    assert open_image(good).size == (40, 30)
    with pytest.raises(BadImage, match=f"^{truncated}: unreadable image"):
        open_image(truncated)
    with pytest.raises(BadImage, match=f"^{text}: not an image file$"):
        open_image(text)
    with pytest.raises(BadImage, match=f"^{tmp_path / 'gone.jpg'}: file not found$"):
        open_image(tmp_path / "gone.jpg")


def test_training_skips_unreadable_images_and_counts_them_or_fails_when_told(tmp_path):
    good = save_image(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_text("oops")
    split = ImageCaptions([good, bad, good], [["a"], ["b"], ["c"]])
    events = Messages()
    kept = readable(split, "skip", "train", events)
    assert kept.captions == [["a"], ["c"]]
    assert events.texts == [f"train: skipped 1 unreadable images, e.g. {bad}: not an image file"]
    with pytest.raises(DataError, match=f"^{bad}: not an image file \\(data.bad_images: fail"):
        readable(split, "fail", "train", events)


# ---------------------------------------------------------------- scores


def test_bleu_counts_every_reference_of_an_image():
    references = [["a red circle above a blue square", "a blue square below a red circle"], ["two dogs play in snow"]]
    perfect = caption_scores(["a blue square below a red circle", "two dogs play in snow"], references)
    assert perfect["bleu4"] == 100.0 and perfect["bleu1"] == 100.0 and perfect["n_images"] == 2
    assert "nrefs:var" in perfect["signature"]
    wrong = caption_scores(["a green triangle left of a yellow circle", "a cat"], references)
    assert wrong["bleu4"] < 20 and wrong["bleu1"] < perfect["bleu1"]
    assert perfect["cider"] > wrong["cider"] >= 0  # CIDEr-D, its idf over these references


def test_the_conventional_caption_bleu_ignores_case_and_punctuation_and_the_cased_one_does_not():
    references = [["A dog runs through the grass .", "The brown dog is running"]]
    scores = caption_scores(["a dog runs through the grass"], references)
    assert scores["bleu4"] == 100.0 and scores["setting"] == "lowercased, punctuation removed"
    assert scores["signature"].startswith("nrefs:2|case:lc|") and scores["cased_signature"].startswith(
        "nrefs:2|case:mixed|"
    )
    assert scores["cased_bleu4"] < 100.0
    assert caption_scores(["A dog's t-shirt ."], [["a dog s t shirt"]])["bleu1"] == 100.0


# ---------------------------------------------------------------- the model shares decoder and search


def tiny_captioner() -> Seq2Seq:
    torch.manual_seed(0)
    config = CaptionModelConfig(
        encoder=ImageEncoderConfig(channels=[8, 16], output_size=16, dropout=0.0),
        decoder=DecoderConfig(embedding_size=8, hidden_size=16, dropout=0.0),
    )
    return build_captioner(config, vocab_size=20, image_size=32).eval()


def test_the_captioner_is_the_translation_model_class_with_a_cnn_encoder():
    model = tiny_captioner()
    assert type(model) is Seq2Seq and type(model.decoder) is RNNDecoder
    memory = model.encode(torch.randn(3, 3, 32, 32))
    assert memory.states.shape == (3, 4 * 4, 16) and bool(memory.mask.all())  # a 4×4 grid: 32 / 2 / 2 / 2 / ...


def test_beam_search_gives_each_image_the_same_caption_in_a_batch_as_alone_and_beam_1_is_greedy():
    model = tiny_captioner()
    images, limit = torch.randn(3, 3, 32, 32), torch.full((3,), 8)
    together = beam_search(model, model.encode(images), limit, beam_size=3)
    for row in range(3):
        alone = beam_search(model, model.encode(images[row : row + 1]), limit[:1], beam_size=3)
        assert alone[0][0].tokens == together[row][0].tokens
        assert alone[0][0].score == pytest.approx(together[row][0].score, abs=1e-4)
    greedy = greedy_search(model, model.encode(images), limit)
    beam_1 = beam_search(model, model.encode(images), limit, beam_size=1)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam_1]


def test_sampling_draws_several_captions_per_image_repeatably():
    model = tiny_captioner()
    images, limit = torch.randn(2, 3, 32, 32), torch.full((2,), 8)
    draw = lambda seed: search(model, model.encode(images), limit, 1, 0.0, 3, sampling=Sampling(seed=seed))  # noqa: E731
    first = draw(5)
    assert [len(captions) for captions in first] == [3, 3]
    assert [[h.tokens for h in c] for c in draw(5)] == [[h.tokens for h in c] for c in first]
    assert len({tuple(h.tokens) for c in first for h in c}) > 1


def test_a_torchvision_backbone_without_torchvision_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # importing it now fails, installed or not
    config = CaptionModelConfig(encoder=ImageEncoderConfig(backbone="torchvision/resnet18"))
    with pytest.raises(
        RecipeError, match="torchvision/resnet18 needs torchvision; install it with pip install 's2s\\[vision\\]'"
    ):
        build_captioner(config, vocab_size=20, image_size=64)


def test_the_shipped_captioning_recipes_load():
    for name in ("captioning-shapes", "captioning", "captioning-flickr8k"):
        recipe = load_recipe(f"recipes/{name}.yaml", check_files=False)
        assert recipe.task == "captioning" and recipe.train.keep_best_by == "bleu4"


def test_an_imagefolder_with_metadata_gives_each_image_its_caption(tmp_path):
    folder = tmp_path / "folder"
    (folder / "train").mkdir(parents=True)
    for name, colour in (("a.png", (200, 0, 0)), ("b.png", (0, 0, 200))):
        save_image(folder / "train" / name, colour)
    rows = [{"file_name": "a.png", "caption": "a red picture"}, {"file_name": "b.png", "caption": "a blue picture"}]
    (folder / "train" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = ImageCaptionData.of(format="imagefolder", image_dir=str(folder), train={"split": "train"})
    split = load_captioned(data, "train")
    by_caption = {refs[0]: image.getpixel((0, 0)) for image, refs in zip(split.images, split.captions, strict=True)}
    assert by_caption == {"a red picture": (200, 0, 0), "a blue picture": (0, 0, 200)}


def test_images_read_in_data_loader_workers_make_the_same_batches_as_in_the_trainer():
    from s2s.pipelines.captioning import CaptionedImages

    pictures = shapes_split(6, 32, seed=3)
    examples = CaptionedImages(
        [p for p, _ in pictures],
        [c for _, c in pictures],
        list(range(6)),
        [[4, 5], [6], [7, 8, 9], [4], [5, 5], [6]],
        image_size=32,
        augment=False,
        workers=1,
    )
    batches = [[0, 2, 4], [1, 3], [5]]
    for in_workers, here in zip(examples.iterate(batches), map(examples.batch, batches), strict=True):
        assert torch.equal(in_workers.src, here.src) and torch.equal(in_workers.tgt_out, here.tgt_out)
        assert in_workers.indices == here.indices


def test_a_mirrored_picture_is_the_plain_one_flipped_left_to_right():
    picture = Image.new("RGB", (45, 30), (200, 30, 30))
    picture.paste((30, 30, 200), (0, 0, 15, 30))  # a blue band on the left: the picture is not symmetric
    plain, mirrored = image_tensor(picture, 24), image_tensor(picture, 24, mirrored=True)
    assert torch.equal(mirrored, plain.flip(-1)) and not torch.equal(mirrored, plain)


def test_the_caption_of_a_mirrored_picture_swaps_left_and_right_and_keeps_their_case():
    assert mirror_caption("A dog left of the Right tree; LEFT.") == "A dog right of the Left tree; RIGHT."
    assert mirror_caption("a bright leftover copyright") == "a bright leftover copyright"  # words, not letters


def test_only_captions_that_name_a_side_are_encoded_again_for_the_mirrored_picture():
    class Counting:
        def __init__(self):
            self.encoded = []

        def encode(self, texts):
            self.encoded += texts
            return [[len(text)] for text in texts]

    tokenizer = Counting()
    texts = ["a dog on the left", "a cat", "right and left"]
    assert mirrored_ids(tokenizer, texts, [[1], [2], [3]]) == [
        [len("a dog on the right")],
        [2],
        [len("left and right")],
    ]
    assert tokenizer.encoded == ["a dog on the right", "left and right"]


def test_with_mirror_an_example_reads_the_mirrored_grid_with_the_mirrored_caption_about_half_the_time():
    from s2s.pipelines.captioning import CaptionedImages

    examples = CaptionedImages(
        [], [], [0, 1], [[4], [5]], image_size=32, augment=False, workers=0,
        features=torch.zeros(2, 1, 1, 1), mirrored_captions=[[6], [7]], mirrored_features=torch.ones(2, 1, 1, 1),
    )  # fmt: skip
    torch.manual_seed(0)
    draws = [(float(grid.sum()), caption) for grid, caption, _ in (examples[k % 2] for k in range(400))]
    assert set(map(lambda d: (d[0], tuple(d[1])), draws)) == {(0.0, (4,)), (0.0, (5,)), (1.0, (6,)), (1.0, (7,))}
    assert 150 < sum(mirrored for mirrored, _ in draws) < 250
    examples.mirrored_captions = None  # without mirror: always the plain picture and caption
    assert {(float(examples[k][0].sum()), tuple(examples[k][1])) for k in (0, 1)} == {(0.0, (4,)), (0.0, (5,))}
