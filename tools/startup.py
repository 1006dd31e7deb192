#!/usr/bin/env python
"""Start-up of the commands that answer: wall time from process start to the first line of the first answer.

    python tools/startup.py translate runs/translation [--text "Ein Mann fährt Fahrrad."] [--repeat 5] [--json]
    python tools/startup.py classify runs/sentiment [--text "a gripping film"]
    python tools/startup.py caption runs/captioning --image photo.jpg

Each command runs ``--repeat`` times as a user runs it (``echo TEXT | s2s translate --model RUN``, ``s2s classify
--model RUN TEXT``, ``s2s caption --model RUN IMAGE``); the clock starts before the process is created and stops
when its first output line arrives. Printed: the median, the fastest and the slowest, and two floors measured the
same way: ``python -c pass`` (the interpreter) and ``python -c "import torch"`` (PyTorch's own import), which no
change to s2s can go below.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["translate", "classify", "caption"])
    parser.add_argument("run", type=Path, help="the run directory the command answers with")
    parser.add_argument("--text", default="Ein Mann fährt mit dem Fahrrad.", help="the input (translate, classify)")
    parser.add_argument("--image", type=Path, help="the picture (caption)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command, 1 to 50 (5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 50:
        parser.error(f"--repeat: {args.repeat} is not between 1 and 50")
    if args.command == "caption" and args.image is None:
        parser.error("--image: caption needs a picture")
    command, stdin = invocation(args)
    measured = {
        "first_answer": (command, stdin),
        "python": ([sys.executable, "-c", "print()"], ""),
        "import_torch": ([sys.executable, "-c", "import torch; print()"], ""),
    }
    seconds: dict[str, list[float]] = {name: [] for name in measured}
    for _ in range(args.repeat):  # interleaved, so that a slower minute of a shared machine slows all three alike
        for name, (line, text) in measured.items():
            seconds[name].append(until_first_line(line, text))
    result = {"command": " ".join(command[2:]), **{name: summary(times) for name, times in seconds.items()}}
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("first_answer", "python", "import_torch"):
            row = result[name]
            spread = f"fastest {row['min_s']:.3f}, slowest {row['max_s']:.3f}"
            print(f"{name:>12}: median {row['median_s']:.3f} s ({spread})")
    return 0


def invocation(args) -> tuple[list[str], str]:
    """The command line and its standard input."""
    s2s = [sys.executable, "-m", "s2s"]
    if args.command == "translate":
        return [*s2s, "translate", "--model", str(args.run)], args.text + "\n"
    if args.command == "classify":
        return [*s2s, "classify", "--model", str(args.run), args.text], ""
    return [*s2s, "caption", "--model", str(args.run), str(args.image)], ""


def summary(seconds: list[float]) -> dict:
    return {"median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3), "runs": len(seconds)}  # fmt: skip


def until_first_line(command: list[str], stdin: str) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.stdin.write(stdin)
    process.stdin.close()
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.stdout.read()
    if process.wait() != 0 or not line:
        raise SystemExit(f"startup: {' '.join(command[2:])} failed: {process.stderr.read().strip()}")
    return elapsed


if __name__ == "__main__":
    sys.exit(main())
