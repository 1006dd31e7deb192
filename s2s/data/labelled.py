"""Labelled texts (sentiment and other classification): a text column and a label column per row.

Column files and hub datasets are read with Hugging Face ``datasets``; every row keeps where it came from
(file and line, or dataset and row), so that a missing or unknown label can be named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from s2s.config import LabelledHub, LabelledTextData
from s2s.data.corpus import first_line
from s2s.data.splits import holdout_rows, holds_out, split_spec, without_holdout
from s2s.errors import DataError

# the line of row 0 in each format: CSV/TSV have a header line
FIRST_LINE = {"tsv": 2, "csv": 2, "jsonl": 1}


@dataclass
class LabelledTexts:
    texts: list[str]
    labels: list[str]  # as strings: 0/1 and pos/neg alike
    places: list[str]  # where each row came from, e.g. data/sst2/dev.tsv.gz:14

    def subset(self, rows: list[int]) -> LabelledTexts:
        return LabelledTexts(*([column[i] for i in rows] for column in (self.texts, self.labels, self.places)))


def load_labelled(data: LabelledTextData, split: str) -> LabelledTexts:
    """All rows of ``split`` (train / valid / test) as the recipe's ``data`` section describes them."""
    if holds_out(data, split):
        rows = load_labelled(without_holdout(data), "train")
        return rows.subset(holdout_rows(len(rows.texts), data, "data.train")[split])
    spec = split_spec(data, split)
    if isinstance(data, LabelledHub):
        return read_hub_rows(data, spec.split)
    return read_column_file(data, Path(spec.path))


def read_column_file(data: LabelledTextData, path: Path) -> LabelledTexts:
    """Rows of a TSV/CSV/JSONL file in ``data.format``, with the section's text and label columns (any labelled
    section will do: a hub recipe's --data file is read this way too)."""
    from datasets import disable_progress_bars, load_dataset  # slow to import; only needed here

    builder, options = {
        "tsv": ("csv", {"delimiter": "\t", "quoting": 3}),  # 3 = csv.QUOTE_NONE: quotes are text in TSV
        "csv": ("csv", {}),
        "jsonl": ("json", {}),
    }[data.format]
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    disable_progress_bars()  # a second progress bar per file is noise beside the trainer's
    try:
        table = load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as error:  # datasets wraps parser errors in many types
        raise DataError(f"{path}: cannot read as {data.format}: {first_line(error)}") from None
    start = FIRST_LINE[data.format]
    return from_table(table, data, str(path), lambda row: f"{path}:{row + start}")


def read_hub_rows(data: LabelledHub, split: str) -> LabelledTexts:
    from datasets import load_dataset

    try:
        table = load_dataset(data.hub_id, data.hub_config, split=split)
    except Exception as error:
        raise DataError(f"data.hub_id: cannot load {data.hub_id!r} split {split!r}: {first_line(error)}") from None
    return from_table(table, data, f"{data.hub_id}[{split}]", lambda row: f"{data.hub_id}[{split}] row {row}")


def from_table(table, data: LabelledTextData, origin: str, place) -> LabelledTexts:
    for column in (data.text_column, data.label_column):
        if column not in table.column_names:
            raise DataError(f"{origin}: no column {column!r} (columns: {', '.join(table.column_names)})")
    texts, labels = table[data.text_column], table[data.label_column]
    rows = LabelledTexts([], [], [])
    for row, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if label is None or str(label).strip() == "":
            raise DataError(f"{place(row)}: no label in column {data.label_column!r}")
        rows.texts.append("" if text is None else str(text))
        rows.labels.append(str(label).strip())
        rows.places.append(place(row))
    return rows
