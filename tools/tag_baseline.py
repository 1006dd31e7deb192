#!/usr/bin/env python3
"""The most-frequent-tag baseline of tagging: each word gets the tag it had most often in training (a tie goes to
the tag more frequent overall), a word unseen in training the most frequent tag overall. Scored like a tagger
(s2s.metrics.tagging_scores): accuracy over words, accuracy over words unseen in training, macro-F1. A tagger that
does not beat it has learnt little beyond a dictionary.

    python tools/tag_baseline.py recipes/tagging.yaml [--split valid] [--json]
    python tools/tag_baseline.py --train data/ud-ewt/train.conllu.gz --eval data/ud-ewt/dev.conllu.gz [--column xpos]

Files ending in .conllu or .conllu.gz are read as CoNLL-U (the column given, upos by default), others as
``word<TAB>tag`` lines with a blank line between sentences (or say which with --format).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from s2s.config import CONLLU_COLUMNS, TaggedData, load_recipe
from s2s.data.tagged import TaggedSentences, load_tagged, read_conllu, read_word_tag_tsv
from s2s.errors import S2SError
from s2s.metrics import tagging_scores


def most_frequent_tags(train: TaggedSentences) -> tuple[dict[str, str], str]:
    """Each training word's most frequent tag (ties: the tag more frequent overall, then by name), and the most
    frequent tag overall, for words unseen in training."""
    overall: Counter[str] = Counter()
    by_word: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for words, tags in zip(train.words, train.tags, strict=True):
        overall.update(tags)
        for word, tag in zip(words, tags, strict=True):
            by_word[word][tag] += 1
    if not overall:
        raise S2SError("the training split has no words")

    def best(counts: Counter[str]) -> str:
        return min(counts, key=lambda tag: (-counts[tag], -overall[tag], tag))

    return {word: best(counts) for word, counts in by_word.items()}, best(overall)


def baseline_scores(train: TaggedSentences, held: TaggedSentences) -> dict:
    """The baseline learnt on ``train``, scored on ``held``; ``unknown_tags`` lists the gold tags of ``held`` it
    never saw in training (each such word counts as a miss)."""
    lexicon, fallback = most_frequent_tags(train)
    tags = sorted({tag for sentence in train.tags for tag in sentence})
    index = {tag: k for k, tag in enumerate(tags)}
    words = [word for sentence in held.words for word in sentence]
    gold = [tag for sentence in held.tags for tag in sentence]
    scores = tagging_scores(
        [index.get(tag, -1) for tag in gold],
        [index[lexicon.get(word, fallback)] for word in words],
        [word not in lexicon for word in words],
        tags,
    )
    scores["unknown_tags"] = sorted({tag for tag in gold if tag not in index})
    return scores


def read_file(path: Path, file_format: str | None, column: str | None) -> tuple[TaggedSentences, str]:
    """The sentences of ``path`` (CoNLL-U if ``file_format`` or its name says so) and what is tagged."""
    if file_format == "conllu" or (file_format is None and path.name.endswith((".conllu", ".conllu.gz"))):
        return read_conllu(path, column or "upos"), column or "upos"
    if column:
        raise S2SError(f"{path}: --column applies to CoNLL-U files; this one is read as word<TAB>tag")
    return read_word_tag_tsv(path), "tags"


def load(args: argparse.Namespace) -> tuple[TaggedSentences, TaggedSentences, str]:
    """The training and scored sentences, and what is tagged (for the report)."""
    if args.recipe:
        recipe = load_recipe(args.recipe)
        if not isinstance(recipe.data, TaggedData):
            raise S2SError(f"{args.recipe}: a {recipe.task} recipe; this baseline is for tagging")
        column = getattr(recipe.data, "column", "tags")
        return load_tagged(recipe.data, "train"), load_tagged(recipe.data, args.split), column
    (train, column), (held, _) = (read_file(path, args.format, args.column) for path in (args.train, args.eval))
    return train, held, column


def report(scores: dict, column: str) -> str:
    unseen = scores["n_oov_words"]
    share = 100 * unseen / max(1, scores["n_words"])
    lines = [
        f"most frequent tag ({column}): accuracy {scores['accuracy']:.2f} % over {scores['n_words']:,} words; "
        f"unseen in training: {unseen:,} words ({share:.1f} %), accuracy {scores['oov_accuracy']:.2f} %; "
        f"macro-F1 {scores['macro_f1']:.2f}"
    ]
    if scores["unknown_tags"]:
        lines.append(f"tags never seen in training (always missed): {', '.join(scores['unknown_tags'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", help="a tagging recipe (or give --train and --eval)")
    parser.add_argument("--split", default="valid", choices=("valid", "test"), help="with a recipe: what to score")
    parser.add_argument("--train", type=Path, help="training file (without a recipe)")
    parser.add_argument("--eval", type=Path, help="file to score (without a recipe)")
    parser.add_argument("--column", choices=CONLLU_COLUMNS, help="CoNLL-U column to tag (default: upos)")
    parser.add_argument("--format", choices=("conllu", "tsv"), help="of --train and --eval (default: by name)")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    args = parser.parse_args(argv)
    files = (args.train, args.eval)
    if not ((args.recipe and not any(files)) or (not args.recipe and all(files))):
        parser.error("give a recipe, or --train and --eval")
    if args.recipe and (args.column or args.format):
        parser.error("--column and --format apply to --train/--eval files; a recipe's data section says them")
    try:
        train, held, column = load(args)
        scores = baseline_scores(train, held)
    except S2SError as error:
        print(f"tag_baseline: error: {error}", file=sys.stderr)
        return error.exit_code
    print(json.dumps({**scores, "column": column}) if args.json else report(scores, column))
    return 0


if __name__ == "__main__":
    sys.exit(main())
