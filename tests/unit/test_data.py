"""Corpora are read exactly, or refused with the file and line; batches use every example once."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from s2s.config import ColumnPairs, DataConfig, GeneratedPairs, HubPairs, TextPairs
from s2s.data.batching import batch_indices, collate, few_widths
from s2s.data.corpus import load_split, read_lines, read_text_pair
from s2s.data.generated import dates_corpus
from s2s.errors import DataError
from s2s.tokenizer import BOS, EOS, PAD


def write(path, text: str, gz: bool = False):
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_text_pairs_are_read_line_by_line_plain_or_gzip(tmp_path, gz):
    suffix = ".gz" if gz else ""
    src = write(tmp_path / f"a.de{suffix}", "ein Hund\r\nzwei Katzen\n", gz)
    tgt = write(tmp_path / f"a.en{suffix}", "a dog\ntwo cats\n", gz)
    assert read_text_pair(src, tgt) == [("ein Hund", "a dog"), ("zwei Katzen", "two cats")]


def test_parallel_files_with_different_line_counts_are_an_error_naming_both(tmp_path):
    src = write(tmp_path / "a.de", "eins\nzwei\ndrei\n")
    tgt = write(tmp_path / "a.en", "one\ntwo\n")
    with pytest.raises(DataError, match=r"a\.de has 3 lines but .*a\.en has 2"):
        read_text_pair(src, tgt)


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good\nalso good\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: not valid UTF-8"):
        read_lines(path)


def test_a_broken_gzip_file_is_named(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"broken\.gz: cannot read"):
        read_lines(path)


@pytest.mark.parametrize(
    ("fmt", "name", "content"),
    [
        ("tsv", "d.tsv", 'de\ten\nein "Hund"\ta "dog"\nKatze\tcat\n'),
        (
            "csv",
            "d.csv",
            'de,en\nein "Hund"-Satz,a dog\nKatze,cat\n'.replace('ein "Hund"-Satz', '"ein ""Hund"""'),
        ),
        (
            "jsonl",
            "d.jsonl",
            "\n".join(json.dumps(r) for r in [{"de": 'ein "Hund"', "en": 'a "dog"'}, {"de": "Katze", "en": "cat"}])
            + "\n",
        ),
    ],
)
def test_column_files_are_read_by_column_name(tmp_path, fmt, name, content):
    path = write(tmp_path / name, content)
    data = DataConfig.of(format=fmt, src_column="de", tgt_column="en", train={"path": str(path)})
    pairs = load_split(data, "train")
    assert pairs[1] == ("Katze", "cat")
    assert pairs[0][0] == 'ein "Hund"'


def test_a_missing_column_is_named(tmp_path):
    path = write(tmp_path / "d.tsv", "de\tfr\nein\tun\n")
    data = DataConfig.of(format="tsv", src_column="de", tgt_column="en", train={"path": str(path)})
    with pytest.raises(DataError, match=r"d\.tsv: no column 'en' \(columns: de, fr\)"):
        load_split(data, "train")


@pytest.mark.parametrize(
    ("keys", "schema"),
    [
        ({"train": {"src": "a.de", "tgt": "a.en"}}, TextPairs),
        ({"format": "jsonl", "train": {"path": "a.jsonl"}}, ColumnPairs),
        ({"format": "hub", "hub_id": "bentrevett/multi30k", "train": {"split": "train"}}, HubPairs),
        ({"format": "generated"}, GeneratedPairs),
    ],
)
def test_a_data_section_is_the_schema_of_its_format(keys, schema):
    data = DataConfig.of(**keys)
    assert type(data) is schema and isinstance(data, DataConfig)
    assert type(DataConfig.of(**data.model_dump())) is schema  # what a run's saved recipe holds reads back the same


def test_the_generated_corpus_has_its_defaults_without_a_generator_key():
    assert load_split(DataConfig.of(format="generated"), "valid") == load_split(
        DataConfig.of(format="generated", generator={"valid_size": 500, "seed": 1}), "valid"
    )


def test_a_held_out_valid_split_comes_from_train_and_never_overlaps(tmp_path):
    src = write(tmp_path / "a.de", "".join(f"satz {i}\n" for i in range(30)))
    tgt = write(tmp_path / "a.en", "".join(f"sentence {i}\n" for i in range(30)))
    data = DataConfig.of(train={"src": str(src), "tgt": str(tgt)}, holdout=5)
    train, valid = load_split(data, "train"), load_split(data, "valid")
    assert len(valid) == 5 and len(train) == 25 and not set(train) & set(valid)


def test_the_dates_corpus_is_deterministic_and_splits_hold_different_days():
    sizes = {"train": 300, "valid": 50, "test": 50}
    first, again = dates_corpus(sizes, seed=5), dates_corpus(sizes, seed=5)
    assert first == again
    days = {name: {iso for _, iso in pairs} for name, pairs in first.items()}
    assert not days["train"] & days["test"] and not days["train"] & days["valid"]
    assert all(len(pairs) == sizes[name] for name, pairs in first.items())


@pytest.mark.parametrize(("budget", "by_tokens"), [(7, False), (60, True)])
def test_every_example_is_in_exactly_one_batch_and_no_batch_exceeds_its_budget(budget, by_tokens):
    rng = random.Random(0)
    lengths = [rng.randint(1, 20) for _ in range(500)]
    batches = batch_indices(lengths, budget, by_tokens, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        size = max(lengths[i] for i in batch) * len(batch) if by_tokens else len(batch)
        assert size <= budget or len(batch) == 1


def test_epoch_order_depends_only_on_the_seed():
    lengths = list(range(1, 200))
    assert batch_indices(lengths, 8, False, random.Random(3)) == batch_indices(lengths, 8, False, random.Random(3))
    assert batch_indices(lengths, 8, False, random.Random(3)) != batch_indices(lengths, 8, False, random.Random(4))


def test_bucketing_keeps_padding_low():
    rng = random.Random(0)
    lengths = [rng.randint(1, 40) for _ in range(5000)]
    batches = batch_indices(lengths, 32, False, random.Random(0))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert sum(lengths) / padded > 0.9


def test_collate_adds_bos_and_eos_and_pads():
    batch = collate([[5, 6, 7], [8]], [[9], [10, 11]], [0, 1])
    assert batch.src.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_in.tolist() == [[BOS, 9, PAD], [BOS, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS, PAD], [10, 11, EOS]]
    assert batch.n_predictions == batch.n_tokens == 5


def test_padded_widths_come_in_few_sizes_at_most_an_eighth_above_the_longest():
    widths = [few_widths(n) for n in range(1, 1025)]
    assert all(n <= width <= n + n / 8 for n, width in enumerate(widths, start=1))
    assert widths[:16] == list(range(1, 17))  # short texts are padded exactly
    assert len(set(widths[512:])) == 8  # eight sizes per doubling
