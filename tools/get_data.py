#!/usr/bin/env python3
"""Fill data/NAME/ with a public data set: downloaded from its official home, or copied from a local folder.

    python tools/get_data.py multi30k                              # download (needs the internet)
    python tools/get_data.py multi30k --from ../shared/data/multi30k  # copy a local copy, byte for byte

Files are written under a temporary name and renamed, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import urllib.request
from contextlib import nullcontext
from pathlib import Path

from s2s.config import DATA_SETS  # the names, kept where a recipe's missing-file message can name this tool

MULTI30K = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
# Universal Dependencies release 2.16 of the English Web Treebank; the official test split is left out on purpose
UD_EWT = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/en_ewt-ud-"
DOWNLOADS = {
    "multi30k": {
        f"{split}.{lang}.gz": f"{MULTI30K}{split}.{lang}.gz"
        for split in ("train", "val", "test_2016_flickr")
        for lang in ("de", "en", "fr")
    },
    "ud-ewt": {f"{split}.conllu.gz": f"{UD_EWT}{split}.conllu" for split in ("train", "dev")},
}

# name → {file name: download URL}; a file named .gz whose URL is not is compressed on arrival. Data sets
# without URLs here can be filled with --from.
DATASETS: dict[str, dict[str, str]] = {name: DOWNLOADS.get(name, {}) for name in DATA_SETS}


def copy_tree(source: Path, target: Path) -> int:
    if not source.is_dir():
        raise SystemExit(f"get_data: error: --from {source}: no such directory")
    count = 0
    for path in sorted(source.rglob("*")):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
            with open(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out)
            Path(tmp).replace(destination)
            count += 1
    return count


def download(files: dict[str, str], target: Path, name: str) -> int:
    if not files:
        raise SystemExit(f"get_data: error: {name} has no download here yet; copy it with --from DIR")
    target.mkdir(parents=True, exist_ok=True)
    for file_name, url in files.items():
        destination = target / file_name
        if destination.is_file():
            continue
        print(f"downloading {url}", file=sys.stderr)
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{file_name}.")
        try:
            compress = file_name.endswith(".gz") and not url.endswith(".gz")
            with (
                open(fd, "wb") as raw,
                urllib.request.urlopen(url, timeout=60) as response,
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else nullcontext(raw) as out,
            ):
                shutil.copyfileobj(response, out)
            Path(tmp).replace(destination)
        except OSError as error:
            Path(tmp).unlink(missing_ok=True)
            raise SystemExit(f"get_data: error: {url}: {error}") from None
    return len(files)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(DATASETS), help="which data set")
    parser.add_argument("--from", dest="source", type=Path, help="copy from this local folder instead of downloading")
    parser.add_argument("--to", type=Path, default=Path("data"), help="parent folder (default: data)")
    args = parser.parse_args(argv)
    target = args.to / args.name
    count = copy_tree(args.source, target) if args.source else download(DATASETS[args.name], target, args.name)
    print(f"{target}: {count} files")


if __name__ == "__main__":
    main()
