"""Attention pictures: a terminal heat map a person can read, and PNG files that open as images."""

from __future__ import annotations

import torch

from s2s.pictures import save_heatmap, terminal_heatmap

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_terminal_heat_map_has_a_row_per_output_piece_and_a_column_per_source_piece():
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.9, 0.1]])  # [outputs + EOS, source]
    picture = terminal_heatmap(["▁ein", "▁Hund", "."], ["▁a", "▁dog"], weights).splitlines()
    rows = picture[-3:]
    assert [row.split()[0] for row in rows] == ["a", "dog", "</s>"]
    assert rows[0].endswith("██    ")  # all weight on the first source piece
    assert rows[1].endswith("    ██")
    assert "▓" in rows[2] or "█" in rows[2]
    header = picture[:-3]
    assert "".join(line[len("</s>") + 1 :][0] for line in header).rstrip() == "ein"  # first column, top to bottom


def test_a_png_heat_map_is_a_valid_png(tmp_path):
    path = tmp_path / "a" / "map.png"
    save_heatmap(path, ["▁ein", "▁Hund"], ["▁a", "▁dog"], torch.eye(3)[:, :2])
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left behind
