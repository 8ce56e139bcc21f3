"""Example images for the web demo, drawn on the spot (nothing is downloaded or shipped)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = (320, 240)


def _shapes(draw: ImageDraw.ImageDraw) -> None:
    draw.ellipse((30, 60, 130, 160), fill=(220, 40, 40))
    draw.rectangle((170, 60, 270, 160), fill=(40, 90, 220))


def _traffic_light(draw: ImageDraw.ImageDraw) -> None:
    draw.rectangle((125, 20, 195, 220), fill=(40, 40, 40))
    for i, colour in enumerate([(230, 40, 40), (240, 200, 30), (40, 190, 70)]):
        draw.ellipse((138, 30 + 62 * i, 182, 74 + 62 * i), fill=colour)


def _stripes(draw: ImageDraw.ImageDraw) -> None:
    for i, colour in enumerate([(250, 160, 30), (250, 250, 250), (30, 140, 60)]):
        draw.rectangle((0, 80 * i, SIZE[0], 80 * i + 79), fill=colour)


EXAMPLES = [
    ("shapes.png", _shapes, "What shapes are in the picture, and what colours are they?"),
    ("traffic_light.png", _traffic_light, "What is this, and which colours does it show?"),
    ("stripes.png", _stripes, "Describe the picture."),
]


def write_examples(folder: Path) -> list[list[str]]:
    """Draw the example images into ``folder``; ``[[image path, question], ...]`` for ``gr.Examples``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, paint, question in EXAMPLES:
        image = Image.new("RGB", SIZE, (255, 255, 255))
        paint(ImageDraw.Draw(image))
        path = folder / name
        image.save(path)
        rows.append([str(path), question])
    return rows
