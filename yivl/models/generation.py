"""Batched text generation for YiVL: left padding, a KV cache, stop strings and streaming."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import DynamicCache

from yivl.constants import IMAGE_TOKEN_INDEX, STOP_STRING
from yivl.errors import YivlError
from yivl.models.sampling import TokenLogprob, next_tokens
from yivl.models.splice import Spliced
from yivl.models.text_stream import TextStream
from yivl.models.yivl import YiVL


class TokenizerLike(Protocol):
    """What generation needs from a tokenizer."""

    eos_token_id: int
    pad_token_id: int | None

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


MAX_TOP_LOGPROBS = 20  # OpenAI's limit


@dataclass
class GenerationSettings:
    """Decoding settings; the defaults are the original release's.

    ``temperature`` 0 is greedy. ``top_k`` 50 is the transformers ``generate`` default that the original
    scripts' sampling used; None disables it. ``top_p`` None disables nucleus filtering. ``seed`` makes
    sampling repeatable for the same batch. ``frequency_penalty`` / ``presence_penalty`` (OpenAI's, -2..2)
    and ``logprobs`` / ``top_logprobs`` (0..20) are applied by the serving batch decoder
    (:mod:`yivl.models.batch_decoder`) only.
    """

    temperature: float = 0.2
    top_p: float | None = None
    top_k: int | None = 50
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = (STOP_STRING,)
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise YivlError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise YivlError(f"top_p must be in (0, 1] or null, got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise YivlError(f"top_k must be >= 1 or null, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise YivlError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        penalties = {"frequency_penalty": self.frequency_penalty, "presence_penalty": self.presence_penalty}
        for name, value in penalties.items():
            if not -2 <= value <= 2:
                raise YivlError(f"{name} must be in [-2, 2], got {value}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise YivlError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")
        self.stop = tuple(self.stop)

    @property
    def per_token_extras(self) -> bool:
        """True when penalties or logprobs are asked for (the serving batch decoder applies them)."""
        return bool(self.frequency_penalty or self.presence_penalty or self.logprobs)


def left_pad(
    prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> ids [B, T] and attention mask [B, T], padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def stack_images(prompts: list[list[int]], images: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """Per-prompt images ([3, S, S], [k, 3, S, S] or None) -> [N, 3, S, S] in placeholder order."""
    if len(images) != len(prompts):
        raise YivlError(
            f"got {len(prompts)} prompts but {len(images)} image entries; give one (or None) each"
        )
    stacked = []
    for i, (prompt, image) in enumerate(zip(prompts, images, strict=True)):
        given = 0 if image is None else (1 if image.dim() == 3 else image.shape[0])
        wanted = sum(1 for t in prompt if t == IMAGE_TOKEN_INDEX)
        if given != wanted:
            raise YivlError(
                f"prompt {i} has {wanted} <image_placeholder> but {given} image(s); give one each"
            )
        if image is not None and given:
            stacked.append(image.reshape(-1, *image.shape[-3:]))
    return torch.cat(stacked) if stacked else None


def _check_context(lengths: torch.Tensor, limit: int) -> None:
    """YivlError when a prompt (image features included) leaves no room to generate."""
    for i, n in enumerate(lengths.tolist()):
        if n >= limit:
            raise YivlError(
                f"prompt {i} is {n} tokens long (image features included) but the model's context is "
                f"{limit}; shorten the question or the conversation history"
            )
        if n == 0:
            raise YivlError(f"prompt {i} is empty; give a question")


# A shared prefix shorter than this is not worth its extra forward pass.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the longest text-only prefix common to all ``prompts``; each keeps >= 1 token after it."""
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and first[n] != IMAGE_TOKEN_INDEX and all(p[n] == first[n] for p in prompts[1:]):
        n += 1
    return n


def prefix_cache(model: YiVL, prefix: list[int], device: torch.device) -> DynamicCache:
    """One-row KV cache of the text ``prefix`` (P ids, positions 0..P-1)."""
    ids = torch.tensor([prefix], dtype=torch.long, device=device)  # [1, P]
    cache = DynamicCache(config=model.llm.config)
    model.llm(
        inputs_embeds=model.llm.get_input_embeddings()(ids),
        attention_mask=torch.ones_like(ids),
        position_ids=torch.arange(len(prefix), device=device)[None],
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return cache


class PrefixCache:
    """Shared-prefix KV caches kept across :func:`generate` calls, so a prefix that every batch shares
    (the system prompt) is computed once, not once per batch.

    The caches hold activations of the weights at the time they were computed: scope one object to a
    stretch without weight updates (one evaluation pass), never across training steps.
    """

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self.computed = 0  # prefixes run through the model (the rest were reused)
        self._caches: OrderedDict[tuple[int, ...], DynamicCache] = OrderedDict()

    def get(self, model: YiVL, prefix: list[int], batch: int, device: torch.device) -> DynamicCache:
        """A fresh cache of ``prefix`` for ``batch`` rows, from the one-row cache computed on first use."""
        key = tuple(prefix)
        base = self._caches.get(key)
        if base is None:
            base = prefix_cache(model, prefix, device)
            self.computed += 1
            self._caches[key] = base
            while len(self._caches) > self.capacity:
                self._caches.popitem(last=False)
        self._caches.move_to_end(key)
        return repeated(model, [(layer.keys, layer.values) for layer in base.layers], batch)


def repeated(model: YiVL, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], batch: int) -> DynamicCache:
    """A fresh cache holding one-row ``layers`` (keys, values ``[1, H, P, D]``) for ``batch`` rows: the
    decoder grows its cache, so a kept cache is never handed out itself."""
    cache = DynamicCache(config=model.llm.config)
    for index, (keys, values) in enumerate(layers):
        cache.update(keys.repeat(batch, 1, 1, 1), values.repeat(batch, 1, 1, 1), index)
    return cache


class Decoder:
    """The KV cache and per-row state of the samples still being generated (rows drop out when done)."""

    def __init__(self, model: YiVL, spliced: Spliced, cache: DynamicCache | None = None) -> None:
        """Prefill ``spliced`` [b, L]; with ``cache`` (a shared prefix of P positions) it goes after it."""
        self.llm = model.llm
        self.embed = model.llm.get_input_embeddings()
        self.cache = cache if cache is not None else DynamicCache(config=model.llm.config)
        past = self.cache.get_seq_length()
        real = spliced.attention_mask
        # layout [prefix][pads][suffix]: the mask hides the pads, positions go on from the prefix
        self.mask = torch.cat([real.new_ones(real.shape[0], past), real], dim=1)  # [b, past]: +1 per step
        position_ids = spliced.position_ids + past * real
        self.positions = position_ids[:, -1:]  # [b, 1]: position of each row's last token
        self.rows = torch.arange(self.mask.shape[0], device=self.mask.device)  # prompt index of each row
        out = self.llm(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=self.mask,
            position_ids=position_ids,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.logits = out.logits[:, -1]  # [b, V]: next-token logits of each row
        # sdpa takes a boolean [b, 1, 1, T] mask as is: building it here skips transformers' mask
        # construction in every decode step (other backends get the 2-D mask)
        self._own_mask = self.llm.config._attn_implementation == "sdpa"

    def step(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Drop the rows where ``keep`` [b] is False (None: keep all), then feed the others' tokens [b]."""
        if keep is not None and not keep.all():  # finished rows leave so that only live rows cost compute
            self.cache.batch_select_indices(keep.nonzero().squeeze(1))
            self.rows, self.mask, self.positions = self.rows[keep], self.mask[keep], self.positions[keep]
            tokens = tokens[keep]
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        self.positions = self.positions + 1
        # one query per row: it sees every real column of its row, so the padding mask is the whole mask
        mask = self.mask.bool()[:, None, None, :] if self._own_mask else self.mask
        out = self.llm(
            inputs_embeds=self.embed(tokens[:, None]),
            attention_mask=mask,
            position_ids=self.positions,
            cache=self.cache,
            use_cache=True,
        )
        self.logits = out.logits[:, -1]


@dataclass
class Generation:
    """One answer: its text, how many tokens were generated for it (eos included) and why it ended:
    ``"stop"`` (eos or a stop string) or ``"length"`` (``max_new_tokens`` or a full context); with
    ``settings.logprobs``, each generated token's log-probability (see :class:`TokenLogprob`)."""

    text: str
    num_tokens: int
    finish_reason: str
    logprobs: list[TokenLogprob] | None = None  # one per generated token but eos, when asked for


def generate(
    model: YiVL,
    tokenizer: TokenizerLike,
    prompts: list[list[int]],
    images: Sequence[torch.Tensor | None],
    settings: GenerationSettings | None = None,
    on_text: Callable[[int, str], None] | None = None,
    prefixes: PrefixCache | None = None,
) -> list[str]:
    """Answer each prompt (token ids, -200 where its image goes); returns the answers in prompt order.

    A sample stops at the eos id, when its decoded continuation contains a stop string (the answer is the
    text before it, whitespace stripped), after ``max_new_tokens``, or when its context is full.
    ``on_text(i, delta)`` receives prompt i's answer piece by piece; the deltas concatenate to the answer.
    ``prefixes`` reuses the KV cache of the prompts' shared prefix across calls (see :class:`PrefixCache`).
    """
    answers = generate_full(model, tokenizer, prompts, images, settings, on_text, prefixes)
    return [g.text for g in answers]


@torch.inference_mode()
def generate_full(
    model: YiVL,
    tokenizer: TokenizerLike,
    prompts: list[list[int]],
    images: Sequence[torch.Tensor | None],
    settings: GenerationSettings | None = None,
    on_text: Callable[[int, str], None] | None = None,
    prefixes: PrefixCache | None = None,
) -> list[Generation]:
    """:func:`generate`, with each answer's generated-token count and finish reason."""
    settings = settings or GenerationSettings()
    if settings.per_token_extras:
        raise YivlError(
            "frequency_penalty, presence_penalty and logprobs are applied by the server's batch decoder "
            "(mode=api); leave them unset here"
        )
    if not prompts:
        return []
    device = model.llm.get_input_embeddings().weight.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # the prompts' common text prefix (usually the system prompt) is prefilled once for all rows
    shared = shared_prefix_length(prompts) if len(prompts) > 1 else 0
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    ids, mask = left_pad([p[shared:] for p in prompts], pad_id, device)
    spliced = model.splice(ids, mask, pixel_values=stack_images(prompts, images), padding_side="left")
    limit = int(model.config.llm["max_position_embeddings"])
    _check_context(spliced.attention_mask.sum(1) + shared, limit)
    # without a caller's PrefixCache the prefix lives for this call only
    prefixes = prefixes or PrefixCache(capacity=1)
    cache = prefixes.get(model, prompts[0][:shared], len(prompts), device) if shared else None
    generator = None
    if settings.seed is not None and settings.temperature > 0:
        generator = torch.Generator(device=device).manual_seed(settings.seed)

    streams = [TextStream(i, settings.stop, on_text) for i in range(len(prompts))]
    counts, stopped = [0] * len(prompts), [False] * len(prompts)
    decoder = Decoder(model, spliced, cache)
    for step in range(settings.max_new_tokens):
        s = settings
        tokens = next_tokens(decoder.logits, s.temperature, s.top_k, s.top_p, generator)
        done = []
        for i, t in zip(decoder.rows.tolist(), tokens.tolist(), strict=True):
            counts[i] += 1
            stopped[i] = advance(streams[i], t, tokenizer)
            done.append(stopped[i])
        room = decoder.positions[:, 0] + 2 < limit  # the new token sits at +1; is there a place after it?
        keep = room & ~torch.tensor(done, dtype=torch.bool, device=device)
        if not keep.any() or step + 1 == settings.max_new_tokens:
            break
        decoder.step(tokens, keep)
    return [
        Generation(stream.finish(), n, "stop" if stop else "length")
        for stream, n, stop in zip(streams, counts, stopped, strict=True)
    ]


def advance(stream: TextStream, token: int, tokenizer: TokenizerLike) -> bool:
    """Add one generated token to a sample; True when the sample is finished."""
    if token == tokenizer.eos_token_id:
        stream.finish()
        return True
    stream.ids.append(token)
    return stream.update(tokenizer.decode(stream.ids, skip_special_tokens=True))
