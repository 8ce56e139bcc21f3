"""Small on-disk corpora for the data tests: good records, every bad input of the data issue, shards."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from yivl.constants import IMAGE_PLACEHOLDER

MAX_PIXELS = 1_000_000
"""The tests' decompression-bomb limit (a 1100x1000 image trips it without a big file)."""

MAX_LENGTH = 512


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else (*colour, 0)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_images(folder: Path) -> None:
    """Good, convertible and broken images under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "good.jpg": _jpeg((200, 30, 30)),
        "good.png": _png(Image.new("RGB", (30, 40), (20, 200, 20))),
        "cmyk.jpg": _jpeg((0, 255, 255), mode="CMYK"),
        "gray16.png": _png(Image.new("I;16", (20, 20), 40000)),
        "palette.png": _png(Image.new("RGB", (20, 20), (9, 9, 200)).convert("P")),
        "rgba.png": _png(Image.new("RGBA", (20, 20), (200, 0, 0, 100))),
        "corrupt.jpg": b"this is not an image at all",
        "truncated.jpg": _jpeg((1, 2, 3), size=(64, 64))[:300],
        "empty.jpg": b"",
        "bomb.png": _png(Image.new("1", (1100, 1000))),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)


def conv(question: str, answer: str, image: str | None = None, placeholder: bool = True) -> dict:
    """A one-turn record; the placeholder goes first in the question when ``placeholder``."""
    q = f"{IMAGE_PLACEHOLDER}\n{question}" if placeholder else question
    record = {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": answer}]}
    if image is not None:
        record["image"] = image
    return record


def _turns(*pairs: tuple) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in pairs]}


def bad_corpus() -> list[tuple[bytes, str | None]]:
    """``(JSONL line bytes, expected reject reason or None)`` covering every bad input of the issue."""
    j = lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8")  # noqa: E731
    ph = IMAGE_PLACEHOLDER
    return [
        (j(conv("What colour?", "red", "good.jpg")), None),
        (j(conv("What colour?", "green", "good.png")), None),
        (j(conv("No image here?", "yes", placeholder=False)), None),  # text-only is fine
        (j(conv("CMYK?", "cyan", "cmyk.jpg")), None),
        (j(conv("16 bit?", "grey", "gray16.png")), None),
        (j(conv("Palette?", "blue", "palette.png")), None),
        (j(conv("Alpha?", "pink", "rgba.png")), None),
        (
            j(
                {
                    "image": "good.jpg",
                    **_turns(("user", f"{ph}\nQ1"), ("assistant", "A1"), ("human", "Q2"), ("gpt", "A2")),
                }
            ),
            None,
        ),
        (j(conv("Corrupt?", "x", "corrupt.jpg")), "image_corrupt"),
        (j(conv("Truncated?", "x", "truncated.jpg")), "image_corrupt"),
        (j(conv("Empty?", "x", "empty.jpg")), "image_empty"),
        (j(conv("Bomb?", "x", "bomb.png")), "image_too_large"),
        (j(conv("Missing?", "x", "nowhere.jpg")), "image_missing"),
        (b'{"image": "good.jpg", "conversations": [', "json_malformed"),
        (b'{"conversations": "\xff\xfe broken"}', "invalid_utf8"),
        (j({"image": "good.jpg", "id": 7}), "no_conversations"),
        (j(conv("No placeholder?", "x", "good.jpg", placeholder=False)), "placeholder_missing"),
        (
            j(
                {
                    "image": "good.jpg",
                    **_turns(("human", f"{ph} Q1"), ("gpt", "A"), ("human", f"{ph} Q2"), ("gpt", "B")),
                }
            ),
            "placeholder_count",  # one image, a token in two turns (twice in one turn is one, as in LLaVA)
        ),
        (j(conv("Placeholder but no image?", "x")), "placeholder_count"),
        (
            j({"image": "good.jpg", **_turns(("human", f"{ph}\nQ"), ("gpt", f"see {ph}"))}),
            "placeholder_in_assistant",
        ),
        (j({"image": "good.jpg", **_turns(("", f"{ph}\nQ"), ("gpt", "A"))}), "role_empty"),
        (j({"image": "good.jpg", **_turns(("robot", f"{ph}\nQ"), ("gpt", "A"))}), "role_unknown"),
        (
            j({"image": "good.jpg", **_turns(("human", f"{ph}\nQ"), ("human", "Q2"), ("gpt", "A"))}),
            "turn_order",
        ),
        (j({"image": "good.jpg", **_turns(("human", f"{ph}\nQ"), ("gpt", "   "))}), "reply_empty"),
        (j({"image": "good.jpg", **_turns(("human", f"{ph}\nQ"), ("gpt", 42))}), "value_not_string"),
        (j(conv("Long?", " ".join(["word"] * 2000), "good.jpg")), "too_long"),
        (b"[1, 2, 3]", "not_an_object"),
    ]


def write_bad_corpus(folder: Path) -> tuple[Path, list[str | None]]:
    """``folder/data.jsonl`` + images; returns its path and the expected reason per record."""
    write_images(folder / "images")
    corpus = bad_corpus()
    path = folder / "data.jsonl"
    path.write_bytes(b"\n".join(line for line, _ in corpus) + b"\n")
    return path, [reason for _, reason in corpus]


def write_good_corpus(folder: Path, n: int) -> Path:
    """``folder/data.jsonl`` with ``n`` usable records over two images (some text-only)."""
    write_images(folder / "images")
    lines = []
    for i in range(n):
        if i % 7 == 3:
            record = conv(f"Question {i} without image?", f"answer {i}", placeholder=False)
        else:
            record = conv(
                f"Question {i} about the picture?",
                f"answer {i}",
                "images/good.jpg" if i % 2 else "images/good.png",
            )
        record["id"] = f"rec-{i}"
        lines.append(json.dumps(record))
    path = folder / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path
