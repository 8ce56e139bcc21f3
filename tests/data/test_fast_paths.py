"""The loader's fast paths give exactly what the plain computations give.

Padding by resizing only the image's rows, normalizing from the 8-bit bands, caching a chunk's token
spans and sweeping labels in one pass are speed-ups only: pixels, ids and labels must not move.
"""

from __future__ import annotations

import bisect
import itertools
import random

import numpy as np
import pytest
import torch
from PIL import Image

from yivl.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX
from yivl.data.chat import (
    SYSTEM_PROMPT,
    ChatFormatError,
    Turn,
    _labels,
    _render,
    build_training_example,
    tokenize_prompt,
)
from yivl.data.images import CLIP_MEAN, CLIP_STD, ImageProcessor
from yivl.data.tokenizer import SPAN_CACHE_SIZE, YiTokenizer

BACKGROUND = (122, 116, 104)
R = Image.Resampling


def random_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def plain_pixels(img: Image.Image, size: int, resize_size: int, resample: int) -> torch.Tensor:
    """Pad with a full canvas, one PIL resize, crop, then ``(x / 255 - mean) / std`` in float64."""
    width, height = img.size
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), BACKGROUND)
    canvas.paste(img, (0, (side - height) // 2) if width > height else ((side - width) // 2, 0))
    resized = canvas.resize((resize_size, resize_size), resample=resample)
    left = (resize_size - size) // 2
    cropped = np.asarray(resized.crop((left, left, left + size, left + size)), dtype=np.float64)
    pixels = (cropped / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    return torch.from_numpy(pixels.transpose(2, 0, 1))


def shapes(seed: int, count: int) -> list[tuple[int, int]]:
    """Wide, tall and square sizes, with extreme aspect ratios and one-pixel sides."""
    rng = random.Random(seed)
    fixed = [
        (640, 480),
        (480, 640),
        (97, 53),
        (53, 97),
        (64, 64),
        (2, 1),
        (1, 2),
        (300, 1),
        (1, 300),
        (65, 64),
    ]
    return fixed + [(rng.randrange(1, 400), rng.randrange(1, 400)) for _ in range(count)]


@pytest.mark.parametrize(
    ("size", "resize_size", "resample"),
    [(112, 112, R.BICUBIC), (96, 128, R.BICUBIC), (64, 64, R.LANCZOS), (64, 64, R.BILINEAR), (48, 48, R.BOX)],
)
def test_padded_pixels_equal_a_full_canvas_resize(size: int, resize_size: int, resample: int) -> None:
    # 1e-5 is far below one 8-bit step (about 0.015 after normalization): the resized bytes are equal.
    processor = ImageProcessor(size, resize_size=resize_size, resample=resample)
    for i, (width, height) in enumerate(shapes(seed=size + resample, count=30)):
        img = random_image(width, height, seed=i)
        expected = plain_pixels(img, size, resize_size, resample).float()
        assert torch.allclose(processor(img), expected, atol=1e-5, rtol=0), (width, height)


def test_photo_sized_image_at_448_equals_a_full_canvas_resize() -> None:
    img = random_image(640, 427, seed=7)
    expected = plain_pixels(img, 448, 448, R.BICUBIC).float()
    assert torch.allclose(ImageProcessor(448)(img), expected, atol=1e-5, rtol=0)


def test_wide_images_take_the_row_pass_shortcut_and_nearest_does_not() -> None:
    # Without this the equality tests above could pass on the plain path alone.
    assert ImageProcessor(448)._padding_row_colour(640) == BACKGROUND
    assert ImageProcessor(448, resample=R.NEAREST)._padding_row_colour(640) is None


def test_nearest_resampling_still_equals_a_full_canvas_resize() -> None:
    processor = ImageProcessor(64, resample=R.NEAREST)
    for i, (width, height) in enumerate(shapes(seed=3, count=5)):
        img = random_image(width, height, seed=i)
        expected = plain_pixels(img, 64, 64, R.NEAREST).float()
        assert torch.allclose(processor(img), expected, atol=1e-5, rtol=0)


def test_every_byte_value_normalizes_like_the_float_formula() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([values, values[::-1], values.T], axis=-1)  # each channel holds all 256 values
    pixels = ImageProcessor(16)(Image.fromarray(rgb), pad=False)
    expected = (rgb.astype(np.float64) / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    assert pixels.dtype == torch.float32 and pixels.is_contiguous()
    assert np.abs(pixels.numpy() - expected.transpose(2, 0, 1)).max() < 1e-6


WORDS = ["cat", "dog", "红色", "的", "über", "🙂", "  ", "\n", "###", "Human:", "é", "<|im_start|>", "x"]


def random_conversation(rng: random.Random) -> list[Turn]:
    def text(n: int) -> str:
        return "".join(rng.choice(WORDS) + rng.choice(["", " ", " ", "\n"]) for _ in range(n)) or "q"

    turns, image_turn = [], rng.choice([0, 0, 1, None])
    for t in range(rng.randrange(1, 4)):
        question = text(rng.randrange(1, 10))
        if t == image_turn:
            question = rng.choice([f"{IMAGE_PLACEHOLDER}\n{question}", f"{question} {IMAGE_PLACEHOLDER}"])
        turns += [Turn("human", question), Turn("assistant", text(rng.randrange(1, 12)))]
    return turns


def example_or_error(tokenizer: YiTokenizer, turns: list[Turn]) -> tuple[list[int], list[int]] | str:
    try:
        example = build_training_example(tokenizer, turns)
    except ChatFormatError as err:
        return str(err)
    return example.input_ids, example.labels


def test_cached_chunk_spans_give_the_same_samples_as_a_cold_tokenizer(tiny_tokenizer_dir) -> None:
    warm = YiTokenizer.from_dir(tiny_tokenizer_dir)
    rng = random.Random(0)
    valid = 0
    for _ in range(150):
        turns = random_conversation(rng)
        got = example_or_error(warm, turns)
        assert got == example_or_error(YiTokenizer.from_dir(tiny_tokenizer_dir), turns)
        if not isinstance(got, str):
            valid += 1
            # ...and the ids are still the whole-text inference tokenization.
            assert got[0] == tokenize_prompt(warm, _render(turns, SYSTEM_PROMPT)[0] + "###")
    assert valid > 100  # mostly valid conversations, so ids and labels were compared
    assert len(warm._span_cache) <= SPAN_CACHE_SIZE


def test_cached_results_are_fresh_lists(tokenizer: YiTokenizer) -> None:
    text = "### Human: red cat"
    first_ids, first_spans = tokenizer.encode_with_spans(text)
    first_ids.append(-1)
    first_spans.clear()
    ids, spans = tokenizer.encode_with_spans(text)
    assert ids == tokenizer.encode(text) and len(spans) == len(ids) and spans[-1][1] == len(text)


def reference_labels(ids: list[int], spans: list, supervised: list) -> list[int] | None:
    """The bisect formulation: inside one supervised span, outside all, or None when crossing an edge."""
    starts = [a for a, _ in supervised]
    labels = []
    for token, (s, e) in zip(ids, spans, strict=True):
        k = bisect.bisect_right(starts, s) - 1
        if k >= 0 and s < supervised[k][1]:
            if e > supervised[k][1]:
                return None
            labels.append(token if token != IMAGE_TOKEN_INDEX else IGNORE_INDEX)
        elif k + 1 < len(starts) and e > starts[k + 1]:
            return None
        else:
            labels.append(IGNORE_INDEX)
    return labels


def test_label_sweep_equals_the_bisect_formulation() -> None:
    rng = random.Random(1)
    crossings = 0
    for _ in range(3000):
        length = rng.randrange(1, 40)
        cuts = sorted(rng.sample(range(1, length), min(length - 1, rng.randrange(0, 12))))
        bounds = [0, *cuts, length]
        spans = []
        for a, b in itertools.pairwise(bounds):
            spans += [(a, a)] * rng.choice([0, 0, 0, 2]) + [(a, b)]  # empty spans: leading byte pieces
        ids = [rng.choice([5, 6, IMAGE_TOKEN_INDEX]) for _ in spans]
        edges = sorted(rng.sample(range(length + 4), 2 * rng.randrange(0, 3)))
        supervised = list(zip(edges[::2], edges[1::2], strict=True))
        expected = reference_labels(ids, spans, supervised)
        if expected is None:
            crossings += 1
            with pytest.raises(ChatFormatError, match="crosses the edge of a reply"):
                _labels(ids, spans, supervised, "x" * length, "sample s")
        else:
            assert _labels(ids, spans, supervised, "x" * length, "sample s") == expected
    assert 300 < crossings < 2700
