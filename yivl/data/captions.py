"""LAION caption samples as Yi-VL conversations: the caption, the prompt picked for it, the record.

Light on purpose (no torch, no webdataset): the data tools' LAION conversion uses it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.data.reasons import SampleRejected
from yivl.data.records import parse_record

DEFAULT_CAPTION_PROMPTS = (
    "Describe the image briefly.",
    "Write a short caption for this image.",
    "What is in this picture?",
    "Give a brief description of the image.",
)


def laion_record(sample: dict, key: str, prompts: Sequence[str] = DEFAULT_CAPTION_PROMPTS) -> dict:
    """The caption conversation training makes of an img2dataset sample: the prompt is picked by a hash
    of the sample's key, the caption is the reply."""
    caption = laion_caption(sample, key)
    return caption_record(caption, prompts[_stable_hash(sample["__key__"]) % len(prompts)], key)


def laion_caption(sample: dict, key: str) -> str:
    """The caption of an img2dataset sample: ``KEY.txt``, else the ``caption`` field of ``KEY.json``."""
    caption = None
    try:
        if "txt" in sample:
            caption = sample["txt"].decode("utf-8")
        elif "json" in sample:
            caption = parse_record(sample["json"], key).get("caption")
    except UnicodeDecodeError as err:
        raise SampleRejected("invalid_utf8", f"{key}: caption {err}") from None
    if not isinstance(caption, str) or not caption.strip():
        raise SampleRejected("caption_missing", f"{key}: no caption in .txt or .json")
    return caption.strip()


def caption_record(caption: str, prompt: str, key: str) -> dict:
    """A one-turn Yi-VL conversation asking ``prompt`` about the image and answering ``caption``."""
    return {
        "id": key,
        "image": "image",
        "conversations": [
            {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{prompt}"},
            {"from": "gpt", "value": caption},
        ],
    }


def _stable_hash(text: str) -> int:
    """A hash that does not change between processes (``hash()`` of a str does)."""
    value = 0
    for byte in text.encode("utf-8"):
        value = (value * 131 + byte) % (1 << 61)
    return value
