"""Text for language models: each split is a list of documents. A stream (``format: stream``) is one document,
the whole file; ``lines`` makes each non-blank line a document, ``files`` each file of a folder. Without a valid
split, ``valid_tail`` holds out the end of the training text (of a stream, its last characters; of documents, the
last ones), so that valid text follows the training text as it does in nanoGPT's tiny-shakespeare split.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from s2s.config import LanguageModelText, TextFiles, TextLines
from s2s.data.corpus import decode_lines, not_utf8
from s2s.data.splits import split_spec
from s2s.errors import DataError


def load_documents(data: LanguageModelText, split: str) -> list[str]:
    """The documents of ``split`` (train / valid / test) as the recipe's ``data`` section describes them."""
    if data.valid_tail and split in ("train", "valid"):
        documents = read_documents(data, "train")
        return tail_split(documents, data.valid_tail, streamed=not isinstance(data, TextLines | TextFiles))[split]
    return read_documents(data, split)


def read_documents(data: LanguageModelText, split: str) -> list[str]:
    spec = split_spec(data, split)
    if isinstance(data, TextFiles):
        folder = Path(spec.folder)
        paths = sorted(path for path in folder.glob(spec.pattern) if path.is_file())
        if not paths:
            raise DataError(f"data.{split}.folder: no file in {folder} matches {spec.pattern!r}")
        return [read_text(path) for path in paths]
    if isinstance(data, TextLines):
        return [line for line in decode_lines(read_bytes(Path(spec.path)), spec.path) if line.strip()]
    return [read_text(Path(spec.path))]


def tail_split(documents: list[str], share: float, streamed: bool) -> dict[str, list[str]]:
    """Train and valid: the last ``share`` of a stream's characters, or of the documents, is valid."""
    if streamed:
        text = documents[0]
        cut = round(len(text) * (1 - share))
        if cut == 0 or cut == len(text):
            raise DataError(f"data.valid_tail: {share} of {len(text):,} characters leaves a split empty")
        return {"train": [text[:cut]], "valid": [text[cut:]]}
    cut = round(len(documents) * (1 - share))
    if cut == 0 or cut == len(documents):
        raise DataError(f"data.valid_tail: {share} of {len(documents):,} documents leaves a split empty")
    return {"train": documents[:cut], "valid": documents[cut:]}


def read_text(path: Path) -> str:
    """A whole UTF-8 text file (gzip if it ends in .gz), line ends as written but for \\r\\n → \\n; bad bytes
    name the line."""
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(str(path), raw.count(b"\n", 0, error.start) + 1, error) from None
    return text.replace("\r\n", "\n")


def read_bytes(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: cannot read: {error}") from None
