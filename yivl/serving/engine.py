"""One model behind every front end: infer.py, evaluate.py, the web demo and the API.

The engine turns (conversation, image) requests into prompts exactly as the original release does,
checks them against the context, and runs batched generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from yivl.checkpoint.load import LoadedModel
from yivl.checkpoint.peft_adapter import load_model
from yivl.data.chat import (
    SYSTEM_PROMPT,
    Turn,
    expanded_length,
    render_prompt,
    tokenize_prompt,
    with_image_placeholder,
)
from yivl.data.images import DEFAULT_MAX_PIXELS, load_image
from yivl.errors import YivlError
from yivl.models.device import pick_device, pick_dtype
from yivl.models.generation import Generation, GenerationSettings, generate_full

ImageInput = str | Path | bytes | Image.Image | None


@dataclass
class Request:
    """One generation request: the conversation so far (ending with a human turn) and its image."""

    turns: list[Turn]
    image: ImageInput = None
    system: str = SYSTEM_PROMPT


class Engine:
    """A loaded Yi-VL plus the prompt, image and generation plumbing around it."""

    def __init__(self, loaded: LoadedModel, max_image_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.loaded = loaded
        self.model = loaded.model.eval()
        self.tokenizer = loaded.tokenizer
        self.image_processor = loaded.image_processor
        self.max_image_pixels = max_image_pixels
        self.context_length = int(loaded.config.llm["max_position_embeddings"])

    @classmethod
    def from_path(
        cls,
        model_path: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        base_model: str | Path | None = None,
    ) -> Engine:
        """Load a published-layout directory, or a peft adapter merged into ``base_model`` (default: the
        adapter's local ``base_model_name_or_path``), onto ``device`` in ``dtype`` (:func:`pick_dtype`)."""
        dev = pick_device(device)
        loaded = load_model(model_path, base_model, dtype=pick_dtype(dtype, dev), device=dev)
        return cls(loaded, max_image_pixels=max_image_pixels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_tokens(self) -> int:
        return self.loaded.config.num_image_tokens

    def pixels(self, image: ImageInput) -> torch.Tensor:
        """Image (path, bytes or PIL) -> normalized pixels ``[3, S, S]`` on the model's device."""
        pil = image if isinstance(image, Image.Image) else load_image(image, max_pixels=self.max_image_pixels)
        pad = self.loaded.config.image_aspect_ratio == "pad"
        dtype = next(self.model.vision_tower.parameters()).dtype
        return self.image_processor(pil, pad=pad).to(self.device, dtype)

    def prompt_ids(self, turns: Sequence[Turn], has_image: bool, system: str = SYSTEM_PROMPT) -> list[int]:
        """Render and tokenize a conversation; the placeholder goes into the first human turn iff an image."""
        _check_turns(turns, has_image)
        prompt = render_prompt(with_image_placeholder(turns, has_image), system=system)
        return tokenize_prompt(self.tokenizer, prompt)

    def prompt_length(self, ids: Sequence[int]) -> int:
        """Sequence length after each image placeholder is expanded to its patch features."""
        return expanded_length(ids, self.image_tokens)

    def generate(
        self,
        requests: Sequence[Request],
        settings: GenerationSettings,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[str]:
        """Answer each request's last human turn; ``on_text(i, delta)`` streams request i's answer."""
        return [g.text for g in self.generate_full(requests, settings, on_text)]

    def generate_full(
        self,
        requests: Sequence[Request],
        settings: GenerationSettings,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[Generation]:
        """:meth:`generate` with each answer's generated-token count and finish reason."""
        prompts, images = [], []
        for req in requests:
            ids = self.prompt_ids(req.turns, req.image is not None, req.system)
            length = self.prompt_length(ids)
            if length >= self.context_length:
                raise YivlError(
                    f"the prompt is {length} tokens (image features included) but the model's context is "
                    f"{self.context_length}; shorten the conversation or the question"
                )
            prompts.append(ids)
            images.append(None if req.image is None else self.pixels(req.image))
        longest = max(self.prompt_length(p) for p in prompts)
        budget = min(settings.max_new_tokens, self.context_length - longest)
        capped = dataclasses.replace(settings, max_new_tokens=budget)
        with torch.inference_mode():
            return generate_full(self.model, self.tokenizer, prompts, images, capped, on_text=on_text)


def _check_turns(turns: Sequence[Turn], has_image: bool) -> None:
    if not turns or turns[-1].role != "human":
        raise YivlError("a conversation to answer must end with a human turn")
    if not turns[-1].text.strip():
        raise YivlError("the question is empty; give question='...'")
