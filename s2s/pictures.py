"""Attention pictures: a compact heat map for the terminal, and PNG heat maps (matplotlib, the `plot` extra)."""

from __future__ import annotations

from pathlib import Path

import torch

from s2s.errors import S2SError
from s2s.files import atomic_write

SHADES = " ░▒▓█"
SHADE_ABOVE = (0.05, 0.25, 0.5, 0.75)  # a weight above the i-th threshold gets SHADES[i + 1]


def clean(piece: str) -> str:
    """SentencePiece marks a word start with ▁; show it as a plain word."""
    return piece.replace("▁", "") or "▁"


def terminal_heatmap(source: list[str], target: list[str], weights: torch.Tensor, width: int = 10) -> str:
    """Rows are output pieces (EOS last), columns source pieces, read top to bottom as vertical labels;
    darker cells carry more attention. weights [len(target) + 1, >= len(source)]."""
    source = [clean(p)[:width] for p in source]
    target = [clean(p) for p in target] + ["</s>"]
    label = max(len(t) for t in target)
    lines = []
    for row in range(max(len(s) for s in source)):  # source labels, one character per line, two columns wide
        lines.append(" " * (label + 1) + "".join(f"{s[row] if row < len(s) else ' '} " for s in source))
    for t, piece in enumerate(target):
        cells = weights[t, : len(source)].tolist()
        shade = "".join(SHADES[sum(w > level for level in SHADE_ABOVE)] * 2 for w in cells)
        lines.append(f"{piece:>{label}} {shade}")
    return "\n".join(lines)


def save_heatmap(path: Path, source: list[str], target: list[str], weights: torch.Tensor) -> None:
    """A PNG with source pieces along the x axis and output pieces down the y axis."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise S2SError("attention plots need matplotlib: pip install 's2s[plot]'") from None
    source = [clean(p) for p in source]
    target = [clean(p) for p in target] + ["</s>"]
    matrix = weights[: len(target), : len(source)].float().numpy()
    figure, axes = plt.subplots(figsize=(1 + 0.35 * len(source), 1 + 0.3 * len(target)))
    axes.imshow(matrix, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(source)), source, rotation=90)
    axes.set_yticks(range(len(target)), target)
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))
    plt.close(figure)


def save_heatmaps(translations, directory: Path) -> list[Path]:
    """One PNG per sentence (its best translation), named 0001.png, 0002.png, … in input order."""
    paths = []
    for number, options in enumerate(translations, start=1):
        best = options[0]
        path = Path(directory) / f"{number:04d}.png"
        save_heatmap(path, best.source_pieces, best.target_pieces, best.hypothesis.attention)
        paths.append(path)
    return paths
