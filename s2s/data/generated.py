"""Corpora that s2s makes itself, so that the quickstart needs no download.

``dates``: a date written the way people write it ("Wednesday, March 3, 2021", "3rd of march 2021", "03.03.2021")
→ its ISO form ("2021-03-03"). Every split holds different calendar days, so the test split measures
generalisation, not memory.
"""

from __future__ import annotations

import datetime as dt
import random

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
