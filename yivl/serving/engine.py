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
from yivl.constants import IMAGE_TOKEN_INDEX
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
from yivl.models.batch_decoder import BatchDecoder, Prompt
from yivl.models.device import pick_device, pick_dtype
from yivl.models.generation import (
    MIN_SHARED_PREFIX,
    Generation,
    GenerationSettings,
    PrefixCache,
    generate_full,
    shared_prefix_length,
)
from yivl.models.image_prefix import ImagePrefixCache, pixel_key

ImageInput = str | Path | bytes | Image.Image | torch.Tensor | None
"""A path, file bytes, a decoded image, or pixels already made by :meth:`Engine.preprocess`."""


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
        # weights never change while serving, so system-prompt caches live as long as the engine
        self.prefixes = PrefixCache()
        self._system_ids: dict[str, list[int]] = {}

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
        """Image (path, bytes, PIL or :meth:`preprocess` pixels) -> normalized pixels ``[3, S, S]`` on the
        model's device, in the vision tower's dtype. Given pixels are not written to (they may be shared)."""
        if not isinstance(image, torch.Tensor):
            image = self.preprocess(image)
        dtype = next(self.model.vision_tower.parameters()).dtype
        return image.to(self.device, dtype)

    def preprocess(self, image: str | Path | bytes | Image.Image) -> torch.Tensor:
        """Image -> normalized pixels ``[3, S, S]`` float32 on the CPU: padded (as the checkpoint asks),
        resized and normalized; :meth:`pixels` takes them as they are."""
        pil = image if isinstance(image, Image.Image) else load_image(image, max_pixels=self.max_image_pixels)
        return self.image_processor(pil, pad=self.loaded.config.image_aspect_ratio == "pad")

    def pixel_settings(self) -> tuple:
        """What besides an image's bytes decides :meth:`preprocess`'s pixels (a cache key's other half)."""
        pad = self.loaded.config.image_aspect_ratio == "pad"
        return (self.image_processor.settings(), pad, self.max_image_pixels)

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
            prompts.append(self._checked_ids(req))
            images.append(None if req.image is None else self.pixels(req.image))
        longest = max(self.prompt_length(p) for p in prompts)
        budget = min(settings.max_new_tokens, self.context_length - longest)
        capped = dataclasses.replace(settings, max_new_tokens=budget)
        with torch.inference_mode():
            return generate_full(self.model, self.tokenizer, prompts, images, capped, on_text=on_text)

    def _checked_ids(self, req: Request) -> list[int]:
        ids = self.prompt_ids(req.turns, req.image is not None, req.system)
        length = self.prompt_length(ids)
        if length >= self.context_length:
            raise YivlError(
                f"the prompt is {length} tokens (image features included) but the model's context is "
                f"{self.context_length}; shorten the conversation or the question"
            )
        return ids

    def prompt(
        self,
        req: Request,
        settings: GenerationSettings,
        on_text: Callable[[str, list], None] | None = None,
        key_image: bool = False,
    ) -> Prompt:
        """One request as a row for :meth:`batch_decoder`: its budget capped by the context, its system
        prompt marked as the prefix whose KV cache is shared across requests, and with ``key_image``
        its image's :func:`pixel_key` (for the decoder's image-prefix cache; hashed before the pixels
        go to the model's device)."""
        ids = self._checked_ids(req)
        budget = min(settings.max_new_tokens, self.context_length - self.prompt_length(ids))
        capped = dataclasses.replace(settings, max_new_tokens=budget)
        image, key = None, None
        if req.image is not None:
            made = req.image if isinstance(req.image, torch.Tensor) else self.preprocess(req.image)
            key = pixel_key(made) if key_image else None
            image = self.pixels(made)
        return Prompt(ids, image, capped, self._system_prefix(ids, req.system), on_text, key)

    def _system_prefix(self, ids: list[int], system: str) -> int:
        """How much of ``ids`` is the system prompt's tokens (0 when too short to be worth a cache)."""
        if system not in self._system_ids:
            if len(self._system_ids) >= self.prefixes.capacity:  # callers' own system prompts vary
                self._system_ids.clear()
            self._system_ids[system] = self.tokenizer.encode(system)
        n = shared_prefix_length([ids, [*self._system_ids[system], IMAGE_TOKEN_INDEX]])
        return n if n >= MIN_SHARED_PREFIX else 0

    def token_piece(self, token: int) -> tuple[str, bytes]:
        """A generated token as OpenAI's logprobs show it: its text and its bytes."""
        return self.tokenizer.decode([token]), self.tokenizer.token_bytes(token)

    def batch_decoder(self, images: ImagePrefixCache | None = None) -> BatchDecoder:
        """A continuous-batching decoder on this model, sharing the engine's prefix caches; ``images``
        keeps the KV of image prefixes across requests (None: not kept)."""
        return BatchDecoder(self.model, self.tokenizer, self.prefixes, images)


def _check_turns(turns: Sequence[Turn], has_image: bool) -> None:
    if not turns or turns[-1].role != "human":
        raise YivlError("a conversation to answer must end with a human turn")
    if not turns[-1].text.strip():
        raise YivlError("the question is empty; give question='...'")
