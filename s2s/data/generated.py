"""Corpora that s2s makes itself, so that the quickstart and the classic algorithmic tasks need no download.

``dates``: a date written the way people write it ("Wednesday, March 3, 2021", "3rd of march 2021", "03.03.2021")
→ its ISO form ("2021-03-03"). Every split holds different calendar days, so the test split measures
generalisation, not memory.

The algorithmic tasks, over the first ``symbols`` letters, one character per token (``tokenizer.type: char``):
``copy`` ("cabd" → "cabd"), ``reverse`` (→ "dbac"), ``sort`` (→ "abcd"), ``recall`` (key-value pairs, a query,
and the queried key's value: "a3c1d7?c" → "1", after the associative recall of Graves et al. 2014 and Ba et al.
2016) and ``delayed_recall`` (the letters, ``lag`` blanks, and the letters to give back: "cab..." → "cab", the
long time lags of Hochreiter & Schmidhuber 1997; a decoder without attention must carry them across the blanks).
Train and valid examples have lengths in ``train_lengths``, test examples in ``test_lengths`` (outside them, so
that the test measures lengths never trained on), each length drawn uniformly.
"""

from __future__ import annotations

import datetime as dt
import random
import string

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(day: int) -> str:
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def written_forms(date: dt.date) -> list[str]:
    """Unambiguous ways to write a day: month names, or day-first numbers with dots."""
    d, m, y = date.day, MONTHS[date.month - 1], date.year
    weekday = WEEKDAYS[date.weekday()]
    return [
        f"{m} {d}, {y}",
        f"{d} {m} {y}",
        f"{ordinal(d)} of {m} {y}",
        f"the {ordinal(d)} of {m.lower()}, {y}",
        f"{m[:3]} {d} {y}",
        f"{d} {m[:3]}. {y}",
        f"{weekday}, {m} {d}, {y}",
        f"{weekday[:3]} {d} {m[:3]} {y}",
        f"{d:02d}.{date.month:02d}.{y}",
        f"{y}/{date.month:02d}/{d:02d}",
    ]


def dates_corpus(sizes: dict[str, int], seed: int) -> dict[str, list[tuple[str, str]]]:
    """Pairs (written date, ISO date) per split; days are drawn without replacement across splits."""
    rng = random.Random(seed)
    first, last = dt.date(1900, 1, 1).toordinal(), dt.date(2099, 12, 31).toordinal()
    total = sum(sizes.values())
    if total > last - first + 1:
        raise ValueError(f"the dates corpus has {last - first + 1} days; {total} were asked for")
    days = rng.sample(range(first, last + 1), total)
    splits, start = {}, 0
    for name, size in sizes.items():
        pairs = []
        for ordinal_day in days[start : start + size]:
            date = dt.date.fromordinal(ordinal_day)
            pairs.append((rng.choice(written_forms(date)), date.isoformat()))
        splits[name] = pairs
        start += size
    return splits


BLANK, QUERY, DIGITS = ".", "?", string.digits  # recall's values are digits, its keys letters


def sequence_corpus(
    task: str,
    sizes: dict[str, int],
    seed: int,
    symbols: int,
    train_lengths: tuple[int, int],
    test_lengths: tuple[int, int] | None,
    lag: int | None,
) -> dict[str, list[tuple[str, str]]]:
    """Pairs (input, answer) per split of an algorithmic task, drawn in split order from one seeded generator."""
    rng, letters = random.Random(seed), string.ascii_lowercase[:symbols]
    splits = {}
    for name, size in sizes.items():
        low, high = test_lengths if name == "test" and test_lengths else train_lengths
        splits[name] = [task_example(task, rng, letters, rng.randint(low, high), lag) for _ in range(size)]
    return splits


def task_example(task: str, rng: random.Random, letters: str, length: int, lag: int | None) -> tuple[str, str]:
    """One (input, answer) of ``task`` with ``length`` letters (recall: ``length`` key-value pairs)."""
    if task == "recall":
        keys = rng.sample(letters, length)
        values = [rng.choice(DIGITS) for _ in keys]
        asked = rng.randrange(length)
        return "".join(k + v for k, v in zip(keys, values, strict=True)) + QUERY + keys[asked], values[asked]
    sequence = "".join(rng.choice(letters) for _ in range(length))
    if task == "copy":
        return sequence, sequence
    if task == "reverse":
        return sequence, sequence[::-1]
    if task == "sort":
        return sequence, "".join(sorted(sequence))
    if task == "delayed_recall":
        return sequence + BLANK * lag, sequence
    raise ValueError(f"unknown task {task!r}")
