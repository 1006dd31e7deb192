"""Tagged sentences (part-of-speech tagging and the like): one tag per word.

CoNLL-U files (Universal Dependencies) are read line by line, each word line parsed by the ``conllu`` package, so
that an error names the file and line (the package's own errors name neither); two-column TSV files too. Every
sentence keeps where it starts (the file and line of its first word).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from conllu.exceptions import ParseException
from conllu.parser import DEFAULT_FIELDS, parse_line
from conllu.serializer import serialize_field

from s2s.config import CONLLU_COLUMNS, ConlluTagged, TaggedData
from s2s.data.corpus import read_lines
from s2s.data.splits import holdout_rows, holds_out, split_spec, without_holdout
from s2s.errors import DataError

# columns whose "_" means the value is missing, not a value of its own (FEATS "_" is "no features", a class)
REQUIRED_COLUMNS = ("upos", "xpos")


@dataclass
class TaggedSentences:
    words: list[list[str]]
    tags: list[list[str]]  # one per word
    places: list[str]  # where each sentence starts: FILE:LINE of its first word (1-based)
    skipped_empty: int = 0  # sentences without a word in the file(s) read, skipped

    def subset(self, rows: list[int]) -> TaggedSentences:
        """The sentences at ``rows``; ``skipped_empty`` stays the count of the file they were read from."""
        columns = ([column[i] for i in rows] for column in (self.words, self.tags, self.places))
        return TaggedSentences(*columns, skipped_empty=self.skipped_empty)


def load_tagged(data: TaggedData, split: str) -> TaggedSentences:
    """All sentences of ``split`` (train / valid / test) as the recipe's ``data`` section describes them."""
    if holds_out(data, split):
        sentences = load_tagged(without_holdout(data), "train")
        return sentences.subset(holdout_rows(len(sentences.words), data, "data.train")[split])
    spec = split_spec(data, split)
    if isinstance(data, ConlluTagged):
        return read_conllu(Path(spec.path), data.column)
    return read_word_tag_tsv(Path(spec.path))


@dataclass
class _Sentence:
    """A sentence being read: its words and tags so far, and the line of its first word."""

    words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    place: str = ""


def _collect(sentences: TaggedSentences, sentence: _Sentence) -> _Sentence:
    """Add a finished ``sentence`` (or count it, if it has no word) and start the next one."""
    if sentence.words:
        sentences.words.append(sentence.words)
        sentences.tags.append(sentence.tags)
        sentences.places.append(sentence.place)
    else:
        sentences.skipped_empty += 1
    return _Sentence()


def read_conllu(path: Path, column: str = "upos") -> TaggedSentences:
    """The sentences of a CoNLL-U file (plain or .gz), each syntactic word (integer ID) tagged with ``column``
    (a column as the conllu package names it: upos, xpos, feats, deprel, …). Comments, multiword-token ranges
    (``3-4``) and empty nodes (``8.1``) are skipped; a block of lines without a word is skipped and counted."""
    if column not in CONLLU_COLUMNS:
        raise DataError(f"{path}: no CoNLL-U column {column!r} to tag with (columns: {', '.join(CONLLU_COLUMNS)})")
    sentences, sentence, started = TaggedSentences([], [], []), _Sentence(), False
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            if started:
                sentence, started = _collect(sentences, sentence), False
            continue
        started = True
        if line.startswith("#"):
            continue
        place = f"{path}:{number}"
        token = _parse_word_line(line, place)
        if not isinstance(token["id"], int):
            continue  # a multiword token or an empty node: its words have lines of their own, or it has none
        sentence.place = sentence.place or place
        sentence.words.append(token["form"])
        sentence.tags.append(_tag(token, column, place))
    if started:
        _collect(sentences, sentence)
    return sentences


def _parse_word_line(line: str, place: str) -> dict:
    """One token line parsed by conllu, checked first for what the package lets pass: it accepts any number of
    columns, reads two spaces in a row as a column break, and takes an ID of ``_`` as none."""
    columns = line.split("\t")
    if len(columns) != len(DEFAULT_FIELDS):
        raise DataError(f"{place}: {_count(len(columns), 'tab-separated column')}; a CoNLL-U word line has 10")
    if "  " in line:
        raise DataError(f"{place}: two spaces in a row, which the conllu parser reads as a column break")
    try:
        token = parse_line(line, DEFAULT_FIELDS)
    except ParseException as error:
        raise DataError(f"{place}: {error}") from None
    if token["id"] is None:
        raise DataError(f"{place}: the ID is '_'; a word line needs a number (or a range 3-4, an empty node 8.1)")
    return token


def _tag(token: dict, column: str, place: str) -> str:
    value = token[column]
    if column in REQUIRED_COLUMNS and value in (None, "_"):
        raise DataError(f"{place}: the word {token['form']!r} has no {column} ('_')")
    return serialize_field(value)


def read_word_tag_tsv(path: Path) -> TaggedSentences:
    """The sentences of a two-column file (plain or .gz): ``word<TAB>tag`` per line, a blank line between
    sentences."""
    sentences, sentence = TaggedSentences([], [], []), _Sentence()
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            if sentence.words:
                sentence = _collect(sentences, sentence)
            continue
        columns = line.split("\t")
        if len(columns) != 2 or not all(column.strip() for column in columns):
            found = _count(len(columns), "tab-separated field") if len(columns) != 2 else "an empty field"
            raise DataError(f"{path}:{number}: expected word<TAB>tag, found {found}")
        sentence.place = sentence.place or f"{path}:{number}"
        sentence.words.append(columns[0])
        sentence.tags.append(columns[1])
    if sentence.words:
        _collect(sentences, sentence)
    return sentences


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' * (n != 1)}"


def split_words(text: str) -> list[str]:
    """Raw text → words as UD English writes them: NLTK's Penn Treebank tokenizer (clitics apart, as in "do n't"
    and "John 's"; punctuation apart), its quotes given back as they were typed ('"', not `` and '')."""
    from nltk.tokenize import NLTKWordTokenizer  # imported on first use: only raw-text tagging needs it

    return [QUOTES.get(word, word) for word in NLTKWordTokenizer().tokenize(text)]


QUOTES = {"``": '"', "''": '"'}


def conllu_lines(words: list[list[str]], tags: list[list[str]], column: str) -> list[str]:
    """CoNLL-U of the predictions: ID, FORM and the predicted tag in its ``column``, ``_`` elsewhere, a blank line
    after each sentence."""
    lines, at = [], DEFAULT_FIELDS.index(column)
    for sentence, sentence_tags in zip(words, tags, strict=True):
        for number, (word, tag) in enumerate(zip(sentence, sentence_tags, strict=True), start=1):
            row = [str(number), word] + ["_"] * 8
            row[at] = tag
            lines.append("\t".join(row))
        lines.append("")
    return lines
