"""KV caches of prompts' image prefixes, kept across requests while serving.

Yi-VL's prompt puts the image right after the system prompt and ``### Human:``, so every request about
one image (each turn of a chat resends it; a VQA set asks several questions about each image) starts
with the same positions: the system prompt, then the image's features. Their keys and values are the
same every time while the weights do not change, so the running batch keeps those of the last few
images: a request whose image prefix is cached skips the vision tower and the image's positions and
prefills only the text after the image.

The caches hold activations of the weights they were computed with: scope one object to a server (its
weights never change), never to training.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import torch

from yivl.constants import IMAGE_TOKEN_INDEX

LayerKV = tuple[torch.Tensor, torch.Tensor]
"""One layer's keys and values, ``[1, H, P, D]`` each."""

# id(tensor) -> (a weak reference to it, its digest); not a WeakKeyDictionary: that compares tensors
# with ``==``, which is elementwise
_digests: dict[int, tuple[weakref.ref, bytes]] = {}
_digests_lock = threading.Lock()


def pixel_key(pixels: torch.Tensor) -> bytes:
    """A digest of ``pixels`` (any shape, dtype or device), remembered while the tensor lives: a tensor
    shared by many requests (the API's decoded-image cache hands out one) is hashed once. The tensor must
    not be written to afterwards (shared pixels never are)."""
    with _digests_lock:
        known = _digests.get(id(pixels))
    if known is not None and known[0]() is pixels:
        return known[1]
    flat = pixels.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    digest = hashlib.sha256(flat).digest() + repr((tuple(pixels.shape), pixels.dtype)).encode()
    key = id(pixels)
    with _digests_lock:  # the entry goes with the tensor (dict.pop alone is atomic)
        _digests[key] = (weakref.ref(pixels, lambda _ref: _digests.pop(key, None)), digest)
    return digest


def image_cut(ids: Sequence[int]) -> int | None:
    """How many of ``ids`` make the image prefix: up to and including the first image placeholder (None
    when there is none, or nothing after it)."""
    try:
        cut = list(ids).index(IMAGE_TOKEN_INDEX) + 1
    except ValueError:
        return None
    return cut if cut < len(ids) else None


class ImagePrefixCache:
    """An LRU of one-row KV caches of image prefixes, at most ``max_entries`` and ``max_bytes``.

    Keyed by the prefix's token ids (the system prompt and what comes before the image) and the image's
    :func:`pixel_key`. ``max_entries`` 0 turns it off. Not thread-safe: the serving worker's thread alone
    uses it.
    """

    def __init__(self, max_entries: int = 8, max_bytes: int = 1_000_000_000) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(f"max_entries and max_bytes must be >= 0, got {max_entries}, {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, list[LayerKV]] = OrderedDict()
        self._sizes: dict[tuple, int] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached keys and values."""
        return self._bytes

    @property
    def enabled(self) -> bool:
        """Whether anything can be kept (both bounds above 0)."""
        return self.max_entries > 0 and self.max_bytes > 0

    @staticmethod
    def key(ids: Sequence[int], image_key: bytes | None) -> tuple | None:
        """The cache key of a prompt's image prefix; None when the prompt has none to cache: no image
        key, or not exactly one image (the key holds one image's digest)."""
        if image_key is None or sum(1 for i in ids if i == IMAGE_TOKEN_INDEX) != 1:
            return None
        cut = image_cut(ids)
        return None if cut is None else (tuple(ids[:cut]), image_key)

    def get(self, key: tuple | None) -> list[LayerKV] | None:
        """The cached layers of ``key`` (counted as a hit, and made the most recent), or None (a miss)."""
        if key is None or not self.enabled:
            return None
        layers = self._entries.get(key)
        if layers is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return layers

    def make_room(self, key: tuple, size: int) -> bool:
        """Drop the least recent entries until one of ``size`` bytes fits under both bounds; False (and
        nothing dropped) when it cannot be kept: too large alone, or ``key`` is kept already. Called
        before the entry is copied out, so the bounds hold while it is made."""
        if not self.enabled or size > self.max_bytes or key in self._entries:
            return False
        while self._entries and (
            len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes
        ):
            old, _ = self._entries.popitem(last=False)
            self._bytes -= self._sizes.pop(old)
        return True

    def put(self, key: tuple, layers: list[LayerKV]) -> None:
        """Keep ``layers`` (tensors nobody else writes to) under ``key``, dropping the least recent
        entries beyond the bounds; an entry larger than ``max_bytes`` alone is not kept."""
        size = sum(k.nbytes + v.nbytes for k, v in layers)
        if not self.make_room(key, size):
            return
        self._entries[key] = layers
        self._sizes[key] = size
        self._bytes += size
