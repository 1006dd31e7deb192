"""What training prints on a terminal: the closing line."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from s2s.console import RichEvents


@pytest.mark.parametrize("best, shown", [(2.664407908943797, "2.664"), (85.09, "85.09"), (None, "none")])
def test_the_closing_line_gives_the_best_score_to_four_significant_digits(best, shown):
    out = io.StringIO()
    events = RichEvents(Console(file=out, width=200))
    events.end({"stop": "max_time", "steps": 15438, "seconds": 3296.4, "keep_best_by": "loss", "best": best})
    assert out.getvalue().strip() == f"stopped (max_time) after 15,438 steps, 3296 s; best valid loss: {shown}"
