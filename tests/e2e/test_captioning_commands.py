"""``s2s caption`` and ``s2s evaluate`` on a tiny shapes run: what a user sees on stdout and stderr."""

from __future__ import annotations

import json

from s2s.data.shapes import shapes_split
from tests.helpers import s2s


def test_caption_prints_one_line_per_good_image_and_one_error_per_bad_file(shapes_run, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for k, (picture, _) in enumerate(shapes_split(2, 32, seed=5)):
        picture.save(folder / f"good{k}.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "readme.txt").write_text("a text file named on the command line")
    result = s2s("caption", "--model", shapes_run, folder, folder / "readme.txt")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(folder / "good0.png"), str(folder / "good1.png")]
    assert all(line.split("\t")[1].strip() for line in lines)
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and "Traceback" not in result.stderr
    assert errors[0].startswith(f"s2s: error: {folder / 'corrupt.jpg'}: ")
    assert errors[1] == f"s2s: error: {folder / 'readme.txt'}: not an image file"


def test_caption_says_so_when_a_folder_holds_no_images(shapes_run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = s2s("caption", "--model", shapes_run, tmp_path / "empty")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"s2s: error: {tmp_path / 'empty'}: no image files in this folder\n"


def test_caption_json_and_nbest(shapes_run, tmp_path):
    picture, _ = shapes_split(1, 32, seed=9)[0]
    picture.save(tmp_path / "one.png")
    result = s2s("caption", "--model", shapes_run, tmp_path / "one.png", "--beam", "3", "--nbest", "2", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["image"] == str(tmp_path / "one.png") and len(record["captions"]) == 2
    assert record["captions"][0]["score"] >= record["captions"][1]["score"]


def test_evaluate_scores_a_split_and_a_users_folder_with_captions(shapes_run, tmp_path):
    on_split = json.loads(s2s("evaluate", shapes_run, "--split", "test", "--json").stdout)
    keys = {f"{cased}bleu{n}" for cased in ("", "cased_") for n in (1, 2, 3, 4)}
    keys |= {"signature", "cased_signature", "setting", "n_images", "seconds"}
    assert keys <= on_split.keys() and "case:lc" in on_split["signature"]
    assert on_split["n_images"] == 16
    pictures = shapes_split(3, 32, seed=11)
    lines = []
    for k, (picture, captions) in enumerate(pictures):
        picture.save(tmp_path / f"p{k}.png")
        lines += [f"p{k}.png#{n}\t{caption}" for n, caption in enumerate(captions)]
    (tmp_path / "captions.txt").write_text("\n".join(lines) + "\n")
    mine = s2s("evaluate", shapes_run, "--images", tmp_path, "--captions", tmp_path / "captions.txt", "--json")
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout).keys() == on_split.keys() and json.loads(mine.stdout)["n_images"] == 3
