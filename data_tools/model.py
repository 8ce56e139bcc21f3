"""What the tools need from a model directory: tokenizer, image processor, image tokens, context length."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from yivl.checkpoint.layout import check_model_dir, read_config
from yivl.data.formats import DEFAULT_IMAGE_TOKENS
from yivl.data.images import DEFAULT_MAX_PIXELS, ImageProcessor
from yivl.data.tokenizer import YiTokenizer

if TYPE_CHECKING:  # torch: imported when a tool runs, not for --help
    from yivl.data.encode import SampleEncoder


@dataclass(frozen=True)
class ModelSpec:
    """Picklable description of the model the data is prepared for (workers load it themselves)."""

    model_dir: Path
    max_length: int | None = None  # None: the model's max_position_embeddings
    max_pixels: int = DEFAULT_MAX_PIXELS
    image_tokens: tuple[str, ...] = DEFAULT_IMAGE_TOKENS

    def load(self, with_images: bool = False) -> SampleEncoder:
        """A :class:`SampleEncoder` for this model (image processor only when ``with_images``)."""
        from yivl.data.encode import SampleEncoder

        model_dir = check_model_dir(self.model_dir)
        config, vit_dir = read_config(model_dir)
        tokenizer = YiTokenizer.from_dir(model_dir)
        processor = ImageProcessor.from_pretrained(vit_dir) if with_images else None
        max_length = self.max_length or int(config.llm["max_position_embeddings"])
        return SampleEncoder(
            tokenizer,
            processor,
            config.num_image_tokens,
            max_length,
            self.max_pixels,
            image_tokens=self.image_tokens,
        )

    def fingerprint(self) -> dict:
        """What makes two conversions comparable: the tokenizer bytes, image tokens and lengths."""
        import hashlib

        model_dir = check_model_dir(self.model_dir)
        config, _ = read_config(model_dir)
        digest = hashlib.sha256((model_dir / "tokenizer.model").read_bytes()).hexdigest()[:16]
        max_length = self.max_length or int(config.llm["max_position_embeddings"])
        return {
            "tokenizer_sha256": digest,
            "num_image_tokens": config.num_image_tokens,
            "max_length": max_length,
            "max_pixels": self.max_pixels,
            "image_tokens": list(self.image_tokens),
        }
