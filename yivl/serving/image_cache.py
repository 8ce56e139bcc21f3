"""Preprocessed images by content: a client that sends the same image every turn has it decoded once.

Chat clients resend the whole conversation, image included, with every question. Decoding the image,
padding it to a square, resizing and normalizing it costs about a millisecond of CPU per request, on a
request thread that competes with the generation worker for the GIL. :class:`PixelCache` keeps the
finished pixels of the last few images, keyed by a hash of the image's bytes and of the settings that
made the pixels, bounded by entries and by bytes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

MAKER_WAIT_S = 60.0
"""The longest a request waits for another request's decode of the same image before decoding it."""


class PixelCache:
    """A thread-safe LRU of pixel tensors ``[3, S, S]``, at most ``max_entries`` and ``max_bytes``.

    A returned tensor is shared by every request for the same image: nobody may write into it (the
    engine copies it to the model's device and dtype, and the batch stacks it into a new tensor).
    ``max_entries`` 0 turns the cache off. Only successful results are kept: a failing ``make`` raises
    as it would without the cache, every time.
    """

    def __init__(self, max_entries: int = 32, max_bytes: int = 200_000_000) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(f"max_entries and max_bytes must be >= 0, got {max_entries}, {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._making: dict[tuple, threading.Event] = {}  # images being made: set when they are done

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return self._bytes

    def get_or_make(self, data: bytes, settings: Hashable, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The pixels of the image ``data`` under ``settings``: cached, or ``make()`` (then kept)."""
        if self.max_entries == 0:
            return make()
        # hashlib releases the GIL for buffers this size; two images colliding is not a concern
        key = (hashlib.sha256(data).digest(), len(data), settings)
        with self._lock:
            pixels = self._hit(key)
            if pixels is not None:
                return pixels
            making = self._making.get(key)
            mine = making is None
            if mine:
                making = self._making[key] = threading.Event()
                self.misses += 1
        if not mine:
            # the same image arriving at once (a burst of one image) is decoded once: wait for it (a
            # maker that fails or is too big to keep leaves each waiter to make it on its own)
            making.wait(MAKER_WAIT_S)
            with self._lock:
                pixels = self._hit(key)
                if pixels is not None:
                    return pixels
                self.misses += 1
        try:  # made outside the lock: one slow decode must not hold up hits for other images
            pixels = make()
            self._put(key, pixels)
            return pixels
        finally:
            if mine:
                with self._lock:
                    del self._making[key]
                making.set()

    def _hit(self, key: tuple) -> torch.Tensor | None:
        """The cached pixels of ``key`` (counted as a hit), or None; the caller holds the lock."""
        pixels = self._entries.get(key)
        if pixels is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return pixels

    def _put(self, key: tuple, pixels: torch.Tensor) -> None:
        size = pixels.element_size() * pixels.nelement()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:  # another request made the same image meanwhile
                return
            self._entries[key] = pixels
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.element_size() * old.nelement()
