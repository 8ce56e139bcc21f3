"""Continuous batching: prompts join a running batch between decode steps and leave it when done.

Each newcomer group is prefilled on its own (after its cached shared prefix, if any), then its KV rows
are appended to the running batch's cache: both are left-padded to the same width, the attention mask
hides the padding, and every row keeps its own position ids, so a row's tokens are the ones it gets
alone. Every row has its own settings (temperature, top_p, top_k, seed, penalties, logprobs), stop
strings and token budget; finished and removed rows leave the batch at once.

A newcomer whose image prefix (system prompt, image) was prefilled before is prefilled after that
prefix's kept KV (:mod:`yivl.models.image_prefix`): only the text after its image is computed. The
others are prefilled whole, and the prefix of each new image among them is kept from their cache.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from yivl.models.generation import (
    Decoder,
    Generation,
    GenerationSettings,
    PrefixCache,
    TokenizerLike,
    advance,
    left_pad,
    repeated,
    stack_images,
)
from yivl.models.image_prefix import ImagePrefixCache, LayerKV
from yivl.models.sampling import TokenLogprob, next_tokens, penalize, token_logprob
from yivl.models.text_stream import TextStream
from yivl.models.yivl import YiVL


@dataclass
class Prompt:
    """One row to generate: token ids (-200 where the image goes), its image ([3, S, S] or None), the
    length of its text prefix worth caching across requests (0: none), settings, a text callback, and
    the image's :func:`~yivl.models.image_prefix.pixel_key` (None: its image prefix is never cached).

    ``on_text(delta, logprobs)`` gets each new piece of the answer with the logprob entries of the tokens
    whose text it completes (``[]`` without logprobs); a token held back with its text (a partial stop
    string, an unfinished UTF-8 character, trailing whitespace) holds its entry back too, and the entries
    of tokens that never show (a stop string, whitespace stripped at the end) come last with ``""``.
    """

    ids: list[int]
    image: torch.Tensor | None
    settings: GenerationSettings
    prefix: int = 0
    on_text: Callable[[str, list[TokenLogprob]], None] | None = None
    image_key: bytes | None = None


class Row:
    """A row's decoding state: its stream, sampling generator, token counts and logprobs."""

    def __init__(self, key: int, prompt: Prompt, device: torch.device) -> None:
        self.key = key
        self.settings = prompt.settings
        self.on_text = prompt.on_text
        self.stream = TextStream(key, prompt.settings.stop, None if self.on_text is None else self._emit)
        self.generator = None
        if self.settings.seed is not None and self.settings.temperature > 0:
            self.generator = torch.Generator(device=device).manual_seed(self.settings.seed)
        self.counts: Counter[int] = Counter()
        self.num_tokens = 0
        self.logprobs: list[TokenLogprob] = []
        self.text_ends: list[int] = []  # per logprob entry: the decoded text's length after its token
        self.sent_logprobs = 0  # entries handed to on_text so far
        self.finish_reason: str | None = None
        self.position = 0  # of the row's last fed token (set when the row joins the batch)
        # greedy with no penalties or logprobs: the batch's one argmax serves it (no per-row work)
        self.plain = self.settings.temperature == 0 and not self.settings.per_token_extras

    def choose(self, logits: torch.Tensor) -> int:
        """Logits [V] -> the next token, after this row's penalties and sampling settings."""
        s = self.settings
        scores = penalize(logits, self.counts, s.frequency_penalty, s.presence_penalty)
        token = int(next_tokens(scores[None], s.temperature, s.top_k, s.top_p, self.generator)[0])
        if s.logprobs:
            self.logprobs.append(token_logprob(logits, token, s.top_logprobs))
        return token

    def advance(self, token: int, tokenizer: TokenizerLike, room: bool) -> bool:
        """Take the chosen token; True when the row is finished (``room``: a place after it)."""
        self.num_tokens += 1
        if token == tokenizer.eos_token_id:
            if self.settings.logprobs:
                self.logprobs.pop()  # eos is no text: OpenAI lists no entry for it
        else:
            self.counts[token] += 1
            if self.settings.logprobs:  # set once the stream has decoded the token (it may emit first)
                self.text_ends.append(-1)
        finished = advance(self.stream, token, tokenizer)
        if self.text_ends and self.text_ends[-1] < 0:
            self.text_ends[-1] = len(self.stream.text)
        if finished:
            self.finish_reason = "stop"
        elif self.num_tokens >= self.settings.max_new_tokens or not room:
            self.finish_reason = "length"
            self.stream.finish()
        if self.finish_reason is not None and self.on_text is not None:
            rest = self.logprobs[self.sent_logprobs :]
            self.sent_logprobs = len(self.logprobs)
            if rest:
                self.on_text("", rest)
        return self.finish_reason is not None

    def _emit(self, _index: int, delta: str) -> None:
        """The stream's new text, with the entries of the tokens whose text is now all sent."""
        self.on_text(delta, self._covered_logprobs())

    def _covered_logprobs(self) -> list[TokenLogprob]:
        if not self.settings.logprobs:
            return []
        if self.text_ends and self.text_ends[-1] < 0:
            self.text_ends[-1] = len(self.stream.text)
        text = self.stream.text
        sent = len(text) - len(text.lstrip()) + len(self.stream.emitted)  # the streamed text is stripped
        # a later token may shorten the text (bytes becoming one character): its text covers theirs
        last = max((i + 1 for i, end in enumerate(self.text_ends) if 0 <= end <= sent), default=0)
        if last <= self.sent_logprobs:
            return []
        covered = self.logprobs[self.sent_logprobs : last]
        self.sent_logprobs = last
        return covered

    def result(self) -> Generation:
        """The finished row's answer."""
        logprobs = list(self.logprobs) if self.settings.logprobs else None
        return Generation(self.stream.finish(), self.num_tokens, self.finish_reason or "length", logprobs)


class BatchDecoder:
    """The running batch of one model; call :meth:`add` and :meth:`remove` between :meth:`step` calls."""

    def __init__(
        self,
        model: YiVL,
        tokenizer: TokenizerLike,
        prefixes: PrefixCache,
        images: ImagePrefixCache | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.prefixes = prefixes
        self.images = images if images is not None else ImagePrefixCache(max_entries=0)
        self.device = model.llm.get_input_embeddings().weight.device
        self.limit = int(model.config.llm["max_position_embeddings"])
        self.rows: dict[int, Row] = {}
        self.state: Decoder | None = None
        self._order: list[Row] = []  # the rows in the order of the state's rows (no sync to read them)
        self._next_key = 0

    @property
    def size(self) -> int:
        """Rows in the running batch."""
        return len(self.rows)

    @torch.inference_mode()
    def add(self, prompts: Sequence[Prompt]) -> list[Row]:
        """Prefill ``prompts`` (grouped by cached prefix: an image prefix, else the text prefix) and
        append them to the batch; their rows, in the order of ``prompts``."""
        groups: dict[tuple, list[int]] = {}
        kept: dict[tuple, list[LayerKV]] = {}  # held here: keeping a new image may evict one in use
        keys = [self.images.key(p.ids, p.image_key) for p in prompts]
        for i, key in enumerate(keys):
            prompt = prompts[i]
            layers = self.images.get(key)
            if layers is not None:
                kept[key] = layers
                groups.setdefault(("image", key), []).append(i)
            else:
                groups.setdefault(("text", tuple(prompt.ids[: prompt.prefix])), []).append(i)
        added: dict[int, Row] = {}
        for (kind, prefix), members in groups.items():
            group = [prompts[i] for i in members]
            if kind == "image":
                new = self._prefill_after(kept[prefix], len(prefix[0]), group)
            else:
                new = self._prefill(list(prefix), group)
                self._keep_images(new, len(prefix), group, [keys[i] for i in members])
            rows = [Row(self._next_key + j, p, self.device) for j, p in enumerate(group)]
            self._next_key += len(group)
            new.rows = torch.tensor([r.key for r in rows], device=self.device)
            for row, position in zip(rows, new.positions[:, 0].tolist(), strict=True):
                row.position = position
            self.state = new if self.state is None else merge(self.state, new)
            self.rows.update({r.key: r for r in rows})
            self._order.extend(rows)
            added.update(zip(members, rows, strict=True))
        return [added[i] for i in range(len(prompts))]

    def _prefill(self, prefix: list[int], group: list[Prompt]) -> Decoder:
        suffixes = [p.ids[len(prefix) :] for p in group]
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, mask = left_pad(suffixes, pad_id, self.device)
        pixels = stack_images(suffixes, [p.image for p in group])
        spliced = self.model.splice(ids, mask, pixel_values=pixels, padding_side="left")
        cache = self.prefixes.get(self.model, prefix, len(group), self.device) if prefix else None
        return Decoder(self.model, spliced, cache)

    def _prefill_after(self, layers: list[LayerKV], cut: int, group: list[Prompt]) -> Decoder:
        """Prefill the text after the image of prompts whose image prefix (their first ``cut`` ids) is
        ``layers``."""
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, mask = left_pad([p.ids[cut:] for p in group], pad_id, self.device)
        spliced = self.model.splice(ids, mask, padding_side="left")
        return Decoder(self.model, spliced, repeated(self.model, layers, len(group)))

    def _keep_images(self, new: Decoder, past: int, group: list[Prompt], keys: list[tuple | None]) -> None:
        """Keep the image prefix (cache key ``keys[j]``) of each new image in ``group``, just prefilled
        into ``new`` after a cached text prefix of ``past`` positions: that prefix, then the row's first
        real positions up to the end of its image's features (a row's keys and values do not depend on
        what follows)."""
        if not self.images.enabled:
            return
        width = new.mask.shape[1]
        lengths: list[int] = []
        per_position = 0  # bytes of one position's keys and values, all layers
        for j, (prompt, key) in enumerate(zip(group, keys, strict=True)):
            if key is None or key in self.images:
                continue
            if not lengths:
                lengths = new.mask[:, past:].sum(1).tolist()  # each row's spliced positions
                per_position = sum(layer.keys[0, :, 0].nbytes * 2 for layer in new.cache.layers)
            start = width - lengths[j]
            end = start + lengths[j] - (len(prompt.ids) - len(key[0]))  # minus the text after the image
            if not self.images.make_room(key, per_position * (past + end - start)):  # before the copy
                continue
            self.images.put(
                key,
                [
                    (_row_span(layer.keys, j, past, start, end), _row_span(layer.values, j, past, start, end))
                    for layer in new.cache.layers
                ],
            )

    def remove(self, keys: set[int]) -> None:
        """Drop rows (cancelled requests) from the batch."""
        if self.state is None or not keys & self.rows.keys():
            return
        keep = [r.key not in keys for r in self._order]
        for key in keys:
            self.rows.pop(key, None)
        self._order = [r for r, k in zip(self._order, keep, strict=True) if k]
        self._select(torch.tensor(keep, device=self.device))

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """Choose every row's next token and feed it; returns the rows that finished (now out)."""
        state = self.state
        if state is None:
            return []
        tokens, keep, finished = [], [], []
        rows = self._order
        best = state.logits.argmax(-1).tolist() if any(r.plain for r in rows) else None
        for j, row in enumerate(rows):
            token = best[j] if row.plain else row.choose(state.logits[j])
            tokens.append(token)
            # the new token sits at position + 1: is there a place after it?
            done = row.advance(token, self.tokenizer, row.position + 2 < self.limit)
            keep.append(not done)
            if done:
                finished.append(self.rows.pop(row.key))
            else:
                row.position += 1
        if not finished:
            state.step(torch.tensor(tokens, device=self.device))
            return finished
        self._order = [r for r, k in zip(rows, keep, strict=True) if k]
        if not self._order:
            self.state = None
            return finished
        state.step(torch.tensor(tokens, device=self.device), torch.tensor(keep, device=self.device))
        trim(state)
        return finished

    def _select(self, keep: torch.Tensor) -> None:
        state = self.state
        if not self._order:
            self.state = None
            return
        index = keep.nonzero().squeeze(1)
        state.cache.batch_select_indices(index)
        state.rows, state.mask, state.positions = state.rows[keep], state.mask[keep], state.positions[keep]
        state.logits = state.logits[keep]
        trim(state)


def _row_span(t: torch.Tensor, row: int, past: int, start: int, end: int) -> torch.Tensor:
    """Row ``row`` of ``t`` [b, H, T, D]: its first ``past`` columns and columns ``start:end``, as a new
    tensor [1, H, past + end - start, D] (no view that keeps the whole batch alive)."""
    return torch.cat([t[row : row + 1, :, :past], t[row : row + 1, :, start:end]], dim=2)


def merge(batch: Decoder, new: Decoder) -> Decoder:
    """``batch`` with ``new``'s rows appended: both left-padded to one width (the mask hides the pads)."""
    width = max(batch.mask.shape[1], new.mask.shape[1])

    def pad(t: torch.Tensor) -> torch.Tensor:  # [b, H, T, D] or [b, T] -> width T on the left
        shift = width - t.shape[-2 if t.dim() == 4 else -1]
        return F.pad(t, (0, 0, shift, 0) if t.dim() == 4 else (shift, 0))

    for old, add in zip(batch.cache.layers, new.cache.layers, strict=True):  # in place: no new cache
        old.keys = torch.cat([pad(old.keys), pad(add.keys)])
        old.values = torch.cat([pad(old.values), pad(add.values)])
    batch.mask = torch.cat([pad(batch.mask), pad(new.mask)])
    batch.positions = torch.cat([batch.positions, new.positions])
    batch.rows = torch.cat([batch.rows, new.rows])
    batch.logits = torch.cat([batch.logits, new.logits])
    return batch


def trim(state: Decoder) -> None:
    """Cut the leading columns that are padding in every row (left by rows that went)."""
    first = int(state.mask.argmax(1).min())
    if first == 0:
        return
    for layer in state.cache.layers:  # views: the next step's cat copies them into new tensors anyway
        layer.keys = layer.keys[:, :, first:]
        layer.values = layer.values[:, :, first:]
    state.mask = state.mask[:, first:]
