"""The collator and the sample encoder: labels equal the chat format's, padding, image order, drops."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from tests.data.corpus import conv
from yivl.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from yivl.data.chat import TrainingExample, build_training_example, turns_from_record
from yivl.data.collate import BATCH_KEYS, Collator, Sample
from yivl.data.encode import SampleEncoder
from yivl.data.images import ImageProcessor
from yivl.data.reasons import SampleRejected


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 12), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def encoder(tokenizer) -> SampleEncoder:
    return SampleEncoder(tokenizer, ImageProcessor(size=28), num_image_tokens=4, max_length=256)


def test_batch_labels_equal_the_chat_format(encoder: SampleEncoder, tokenizer) -> None:
    records = [
        conv("What colour is the shape?", "red", "a.png"),
        conv("A question without an image, a little longer than the others?", "no", placeholder=False),
        {
            "image": "b.png",
            "conversations": [
                {"from": "human", "value": "<image_placeholder>\nFirst?"},
                {"from": "gpt", "value": "one"},
                {"from": "human", "value": "Second?"},
                {"from": "gpt", "value": "two"},
            ],
        },
    ]
    images = [_png((255, 0, 0)), None, _png((0, 0, 255))]
    samples = [
        encoder.encode(r, img, f"s{i}") for i, (r, img) in enumerate(zip(records, images, strict=True))
    ]
    batch = Collator(image_size=28)(samples)
    assert tuple(batch) == BATCH_KEYS
    for row, record in enumerate(records):
        ref = build_training_example(tokenizer, turns_from_record(record, "ref"))
        n = len(ref.input_ids)
        assert batch["input_ids"][row, :n].tolist() == ref.input_ids
        assert batch["labels"][row, :n].tolist() == ref.labels
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all() and (batch["input_ids"][row, n:] == 0).all()
    supervised = tokenizer.decode([t for t in batch["labels"][2].tolist() if t != IGNORE_INDEX])
    assert "one" in supervised and "two" in supervised and "Second" not in supervised
    # images in the row-major order of their -200 ids: red (row 0) then blue (row 2)
    assert batch["pixel_values"].shape == (2, 3, 28, 28)
    assert batch["pixel_values"][0, 0].mean() > batch["pixel_values"][1, 0].mean()
    assert int((batch["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 2


def test_text_only_batch_has_empty_pixel_values(encoder: SampleEncoder) -> None:
    sample = encoder.encode(conv("Hello?", "hi", placeholder=False), None, "t")
    batch = Collator(image_size=28)([sample])
    assert batch["pixel_values"].shape == (0, 3, 28, 28)
    assert batch["pixel_values"].dtype == torch.float32


def test_over_long_and_unsupervised_samples_are_rejected(tokenizer) -> None:
    short = SampleEncoder(tokenizer, ImageProcessor(size=28), num_image_tokens=100, max_length=120)
    record = conv("What colour is the shape?", "red", "a.png")
    text_len = len(build_training_example(tokenizer, turns_from_record(record, "r")).input_ids)
    assert text_len < 120 < text_len + 99  # fits as text, too long once the image becomes 100 features
    with pytest.raises(SampleRejected) as err:
        short.encode(record, _png((1, 2, 3)), "long")
    assert err.value.reason == "too_long"


def test_mismatched_image_count_is_a_collate_error() -> None:
    ids = torch.tensor([5, IMAGE_TOKEN_INDEX, 6])
    with pytest.raises(ValueError, match="image ids"):
        Collator(image_size=4)([Sample(ids, ids.clone(), torch.zeros(0, 3, 4, 4), "bad")])


def test_sample_without_supervised_tokens_is_rejected(encoder: SampleEncoder, monkeypatch) -> None:
    def unsupervised(tokenizer, turns, sample_id="?"):
        ids = [11, 12, 13]
        return TrainingExample(ids, [IGNORE_INDEX] * 3, 0)

    monkeypatch.setattr("yivl.data.encode.build_training_example", unsupervised)
    with pytest.raises(SampleRejected) as err:
        encoder.encode(conv("Q?", "A", placeholder=False), None, "x")
    assert err.value.reason == "no_supervised_tokens"
