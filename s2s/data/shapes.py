"""A captioning set s2s draws itself: coloured shapes placed relative to each other, with captions that say so
("a red circle above a blue square"). Each picture has two references, one from each shape's point of view."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
# relation of the first shape to the second → the inverse, and the direction the second shape lies in
RELATIONS = {"above": ("below", (0, 1)), "below": ("above", (0, -1)), "left of": ("right of", (1, 0))}
RELATIONS["right of"] = ("left of", (-1, 0))


def shapes_split(size: int, image_size: int, seed: int) -> list[tuple[Image.Image, list[str]]]:
    """``size`` pictures with their captions; the same seed draws the same pictures."""
    rng = random.Random(seed)
    return [shapes_picture(rng, image_size) for _ in range(size)]


def shapes_picture(rng: random.Random, image_size: int) -> tuple[Image.Image, list[str]]:
    first, second = rng.sample([(c, s) for c in COLOURS for s in SHAPES], 2)
    relation = rng.choice(list(RELATIONS))
    inverse, (dx, dy) = RELATIONS[relation]
    grey = rng.randint(200, 250)
    image = Image.new("RGB", (image_size, image_size), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    radius = image_size // 8 + rng.randint(-image_size // 32, image_size // 32)
    gap = 2 * radius + rng.randint(2, image_size // 8)
    # the pair's centre is placed so that both shapes stay inside the picture
    span_x, span_y = abs(dx) * gap, abs(dy) * gap
    margin = radius + 2
    cx = rng.randint(margin + span_x // 2, image_size - margin - span_x // 2)
    cy = rng.randint(margin + span_y // 2, image_size - margin - span_y // 2)
    first_at = (cx - dx * gap // 2, cy - dy * gap // 2)
    second_at = (first_at[0] + dx * gap, first_at[1] + dy * gap)
    for (colour, shape), at in ((first, first_at), (second, second_at)):
        draw_shape(draw, shape, at, radius, COLOURS[colour])
    captions = [
        f"a {first[0]} {first[1]} {relation} a {second[0]} {second[1]}",
        f"a {second[0]} {second[1]} {inverse} a {first[0]} {first[1]}",
    ]
    return image, captions


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, at: tuple[int, int], radius: int, fill) -> None:
    x, y = at
    if shape == "circle":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)
    elif shape == "square":
        draw.rectangle([x - radius, y - radius, x + radius, y + radius], fill=fill)
    else:
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=fill)
