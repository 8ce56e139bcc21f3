"""Record + image -> :class:`Sample`: checks, chat rendering and masking, image decoding and processing.

Every failure is a :class:`SampleRejected` with one reason, so the loaders skip and count it and the
data tools write it to a rejects file. Cheap text checks run before any image is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from yivl.constants import IGNORE_INDEX
from yivl.data.chat import (
    ChatFormatError,
    TrainingExample,
    build_training_example,
    expanded_length,
    turns_from_record,
)
from yivl.data.checks import check_record
from yivl.data.formats import DEFAULT_IMAGE_TOKENS, normalize_record
from yivl.data.formats import image_tokens as accepted_image_tokens
from yivl.data.image_files import DEFAULT_MAX_IMAGE_BYTES, check_image_size, read_image_file
from yivl.data.images import DEFAULT_MAX_PIXELS, ImageError, ImageProcessor, load_image
from yivl.data.reasons import SampleRejected, SkipCounter
from yivl.data.tokenizer import YiTokenizer

if TYPE_CHECKING:  # torch on first encode: the data tools' --help imports this module and must stay fast
    import torch

    from yivl.data.collate import Sample

ImageSource = Path | bytes


@dataclass
class EncodedText:
    """A checked, rendered and masked record; ``length`` counts image features (the LLM's view)."""

    example: TrainingExample
    image: str | None
    length: int
    record: dict  # the canonical record (see yivl.data.formats), what the data tools write
    repairs: tuple[str, ...] = ()

    @property
    def supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.example.labels)


def read_image_bytes(path: Path, where: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """The bytes of an image file (regular, at most ``max_bytes``); problems raise :class:`SampleRejected`.

    ``path`` is already resolved and contained (see :func:`yivl.data.image_files.resolve_image_path`).
    """
    return read_image_file(path, where, max_bytes)


def decode_image(data: bytes, where: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to RGB (CMYK, 16-bit, palette and alpha convert); failures are rejects."""
    if not data:
        raise SampleRejected("image_empty", f"{where}: zero-byte image")
    try:
        return load_image(data, max_pixels=max_pixels)
    except ImageError as err:
        reason = "image_too_large" if "too large" in str(err) else "image_corrupt"
        raise SampleRejected(reason, f"{where}: {err}") from None


class SampleEncoder:
    """Turns records into samples for one model: its tokenizer, image processor and context length.

    ``num_image_tokens`` is how many features one image becomes (1024 for Yi-VL at 448 px);
    ``max_length`` the longest sequence allowed after that expansion. Over-long samples are rejected
    whole, never truncated. Image files and image bytes over ``max_image_bytes`` are rejected unread.
    """

    def __init__(
        self,
        tokenizer: YiTokenizer,
        image_processor: ImageProcessor | None,
        num_image_tokens: int,
        max_length: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        image_tokens: Sequence[str] = DEFAULT_IMAGE_TOKENS,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_tokens = accepted_image_tokens(image_tokens)
        self.image_processor = image_processor
        self.num_image_tokens = int(num_image_tokens)
        self.max_length = int(max_length)
        self.max_pixels = int(max_pixels)
        self.max_image_bytes = int(max_image_bytes)

    def encode_text(self, record: dict, where: str) -> EncodedText:
        """Normalise, check, render and mask a record; rejects over-long and unsupervised samples."""
        normalized = normalize_record(record, self.image_tokens)
        record = normalized.record
        image = check_record(record, where, self.image_tokens)
        try:
            turns = turns_from_record(record, where)
            example = build_training_example(self.tokenizer, turns, sample_id=where)
        except ChatFormatError as err:
            raise SampleRejected("chat_format", str(err)) from None
        length = expanded_length(example.input_ids, self.num_image_tokens)
        if length > self.max_length:
            raise SampleRejected(
                "too_long", f"{where}: {length} tokens after image expansion > {self.max_length}"
            )
        encoded = EncodedText(example, image, length, record, normalized.repairs)
        if encoded.supervised == 0:
            raise SampleRejected("no_supervised_tokens", f"{where}: every label is -100")
        return encoded

    def pixels(self, data: bytes, where: str) -> torch.Tensor:
        """Decoded and processed image ``[1, 3, S, S]``."""
        if self.image_processor is None:
            raise RuntimeError("this encoder was built without an image processor")
        return self.image_processor(decode_image(data, where, self.max_pixels)).unsqueeze(0)

    def encode(self, record: dict, image: ImageSource | None, key: str) -> Sample:
        """A full sample; ``image`` is the file (resolved, contained path) or its bytes, None for text-only.

        A record naming an image when none is given (or the reverse) is a reject.
        """
        import torch

        from yivl.data.collate import Sample

        text = self.encode_text(record, key)
        size = self.image_processor.size if self.image_processor else 0
        if text.image is None:
            pixel_values = torch.zeros((0, 3, size, size), dtype=torch.float32)
        elif image is None:
            raise SampleRejected("image_missing", f"{key}: the record names an image but none was found")
        elif isinstance(image, Path):
            pixel_values = self.pixels(read_image_bytes(image, key, self.max_image_bytes), key)
        else:
            check_image_size(len(image), key, self.max_image_bytes)
            pixel_values = self.pixels(image, key)
        ids = torch.tensor(text.example.input_ids, dtype=torch.long)
        labels = torch.tensor(text.example.labels, dtype=torch.long)
        return Sample(ids, labels, pixel_values, key, text.repairs)


def encode_counted(
    encoder: SampleEncoder,
    record: dict,
    image: ImageSource | None,
    key: str,
    skips: SkipCounter,
    has_image: bool,
) -> Sample | None:
    """``encoder.encode``, counting the outcome in ``skips``: None for a reject. ``has_image`` says the
    record names an image (the all-image-records-rejected rule counts those)."""
    try:
        sample = encoder.encode(record, image, key)
    except SampleRejected as err:
        skips.add(err.reason, str(err), has_image)
        return None
    skips.kept(sample.num_images > 0, sample.repairs)
    return sample
