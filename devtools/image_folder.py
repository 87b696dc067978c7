"""Image folders for tests: coloured shapes a small CNN learns in a few epochs.

``make_image_folder(root, ...)`` writes ``root/<class>/<i>.<fmt>`` (or
``root/<split>/<class>/...`` with ``splits``) with Pillow: class ``k`` is a
filled shape (disc, square, triangle, then again) in a colour of its own, at a
random position and size, on a noisy dark background, drawn from a NumPy
Generator seeded by ``seed``: the same arguments write the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle")
COLOURS = (
    (230, 60, 60),
    (60, 200, 60),
    (70, 90, 240),
    (230, 200, 40),
    (200, 60, 220),
    (40, 210, 210),
)


def class_name(k: int) -> str:
    """The folder name of class ``k``: sorted names keep the classes' order."""
    return f"class{k:02d}_{SHAPES[k % len(SHAPES)]}"


def make_image_folder(
    root: Path,
    classes: int = 3,
    per_class: int = 10,
    size: tuple[int, int] = (32, 32),
    channels: int = 3,
    seed: int = 0,
    splits: Sequence[str] | None = None,
    fmt: str = "png",
) -> Path:
    """Write ``per_class`` images of each of ``classes`` classes (in each of ``splits``, if
    given) under ``root``, ``size`` (height, width) with 1 or 3 ``channels``, in ``fmt``
    (png, jpeg, bmp, gif); return ``root``."""
    rng = np.random.default_rng(seed)
    for split in splits or (None,):
        base = root if split is None else root / split
        for k in range(classes):
            folder = base / class_name(k)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = draw_shape(rng, k, size, channels)
                image.save(folder / f"{i:04d}.{fmt}", format="JPEG" if fmt == "jpg" else fmt)
    return root


def draw_shape(
    rng: np.random.Generator, k: int, size: tuple[int, int], channels: int = 3
) -> Image.Image:
    """One image of class ``k``: its shape and colour at a random place, with noise."""
    height, width = size
    noise = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(noise, "RGB")
    extent = min(height, width)
    radius = rng.uniform(0.2, 0.35) * extent
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    colour = COLOURS[k % len(COLOURS)]
    draw = ImageDraw.Draw(image)
    shape = SHAPES[k % len(SHAPES)]
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon(
            [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour
        )
    return image.convert("L") if channels == 1 else image
