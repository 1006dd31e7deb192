#!/usr/bin/env python3
"""The trivial captioning baseline: the most frequent training caption, given to every image of a split, scored
like a model (sacreBLEU BLEU-1…4 against all references). A captioner that does not beat it has learnt nothing
about the pictures.

    python tools/caption_baseline.py recipes/captioning.yaml [--split valid] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from s2s.config import load_recipe
from s2s.data.images import load_captioned
from s2s.errors import S2SError
from s2s.metrics import caption_scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        recipe = load_recipe(args.recipe)
        if recipe.task != "captioning":
            raise S2SError(f"{args.recipe}: a {recipe.task} recipe; this baseline is for captioning")
        train, split = load_captioned(recipe.data, "train"), load_captioned(recipe.data, args.split)
    except S2SError as error:
        print(f"caption_baseline: error: {error}", file=sys.stderr)
        return error.exit_code
    counts = Counter(caption.strip() for captions in train.captions for caption in captions)
    caption, times = counts.most_common(1)[0]
    scores = caption_scores([caption] * len(split.images), split.captions)
    scores.update({"caption": caption, "times_in_train": times, "split": args.split})
    if args.json:
        print(json.dumps(scores))
    else:
        print(f"most frequent training caption ({times}×): {caption!r}")
        print("  ".join(f"BLEU-{n} {scores[f'bleu{n}']:.2f}" for n in (1, 2, 3, 4)), f"on {len(split.images)} images")
        print(f"{scores['signature']} ({scores['setting']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
