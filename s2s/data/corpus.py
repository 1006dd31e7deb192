"""Parallel corpora: (source, target) sentence pairs of one split, from any source a recipe can name.

Plain text pairs (one sentence per line, plain or .gz) are read here, line by line, so that errors can name the
file and line; column files (TSV/CSV/JSON Lines) and hub datasets go through Hugging Face ``datasets``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from s2s.config import ColumnPairs, DataConfig, GeneratedPairs, HubPairs, PairColumns
from s2s.data.generated import dates_corpus, sequence_corpus
from s2s.data.splits import holdout_rows, holds_out, split_spec
from s2s.errors import DataError

Pair = tuple[str, str]


def load_split(data: DataConfig, split: str) -> list[Pair]:
    """All pairs of ``split`` (train / valid / test) as the recipe's ``data`` section describes them."""
    if isinstance(data, GeneratedPairs):
        return generated_split(data, split)
    if holds_out(data, split):
        pairs = read_split(data, "train")
        return [pairs[i] for i in holdout_rows(len(pairs), data, "data.train")[split]]
    return read_split(data, split)


def read_split(data: DataConfig, split: str) -> list[Pair]:
    """One split as named by the recipe (text files, a column file, or a hub dataset's split)."""
    spec = split_spec(data, split)
    if isinstance(data, HubPairs):
        return read_hub(data, spec.split)
    if isinstance(data, ColumnPairs):
        return read_columns(data, Path(spec.path))
    return read_text_pair(Path(spec.src), Path(spec.tgt))


def generated_split(data: GeneratedPairs, split: str) -> list[Pair]:
    gen = data.generator
    sizes = {"train": gen.train_size, "valid": gen.valid_size, "test": gen.test_size}
    if gen.task == "dates":
        return dates_corpus(sizes, gen.seed)[split]
    corpus = sequence_corpus(gen.task, sizes, gen.seed, gen.symbols, gen.train_lengths, gen.test_lengths, gen.lag)
    return corpus[split]


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (gzip if it ends in .gz), without line ends; bad bytes name the line."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: cannot read: {error}") from None
    return decode_lines(raw, str(path))


def decode_lines(raw: bytes, origin: str) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(origin, raw.count(b"\n", 0, error.start) + 1, error) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def not_utf8(origin: str, line: int, error: UnicodeDecodeError) -> DataError:
    return DataError(f"{origin}:{line}: not valid UTF-8 ({error.reason})")


def read_text_pair(src: Path, tgt: Path) -> list[Pair]:
    sources, targets = read_lines(src), read_lines(tgt)
    if len(sources) != len(targets):
        raise DataError(f"{src} has {len(sources)} lines but {tgt} has {len(targets)}; parallel files must match")
    return list(zip(sources, targets, strict=True))


def read_columns(data: ColumnPairs, path: Path) -> list[Pair]:
    from datasets import disable_progress_bars, load_dataset  # slow to import; only these formats need it

    builder, options = {
        "tsv": ("csv", {"delimiter": "\t", "quoting": 3}),  # 3 = csv.QUOTE_NONE: quotes are text in TSV
        "csv": ("csv", {}),
        "jsonl": ("json", {}),
    }[data.format]
    disable_progress_bars()  # a second progress bar per file is noise beside the trainer's
    try:
        table = load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as error:  # datasets wraps parser errors in many types
        raise DataError(f"{path}: cannot read as {data.format}: {first_line(error)}") from None
    return pairs_from_table(table, data, str(path))


def read_hub(data: HubPairs, split: str) -> list[Pair]:
    """A dataset from the Hugging Face hub (or its local cache), e.g. hub_id: bentrevett/multi30k."""
    from datasets import load_dataset

    try:
        table = load_dataset(data.hub_id, data.hub_config, split=split)
    except Exception as error:
        raise DataError(f"data.hub_id: cannot load {data.hub_id!r} split {split!r}: {first_line(error)}") from None
    return pairs_from_table(table, data, f"{data.hub_id}[{split}]")


def pairs_from_table(table, data: PairColumns, origin: str) -> list[Pair]:
    for column in (data.src_column, data.tgt_column):
        if column not in table.column_names:
            raise DataError(f"{origin}: no column {column!r} (columns: {', '.join(table.column_names)})")
    sources, targets = table[data.src_column], table[data.tgt_column]
    return [("" if s is None else str(s), "" if t is None else str(t)) for s, t in zip(sources, targets, strict=True)]


def first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
