"""Lazy access to a JSON list or JSONL file of records through a byte-offset index.

A million-record file costs two int64 arrays here, not a million Python dicts: each record is read with
``os.pread`` and parsed only when asked for. JSONL is split at newlines (a bad line is that record's
reject); a JSON list is indexed by a check of JSON's grammar (:mod:`yivl.data.json_index`), so a damaged
list is refused at once instead of silently losing the records after the damage.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from pathlib import Path

import numpy as np

from yivl.data.json_index import json_list_spans
from yivl.data.reasons import SampleRejected
from yivl.errors import YivlError

_IMAGE_KEY = re.compile(rb'"image"\s*:\s*[^\s,}n]')  # an "image" key whose value is not null
_BLOCK = 16 << 20  # bytes per numpy pass over the file

DEFAULT_MAX_RECORD_BYTES = 1 << 20
"""Records over this many bytes are rejected as ``record_too_large`` before they are read."""


def _jsonl_spans(buf: mmap.mmap | bytes, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``[start, end)`` of every non-empty line from byte ``first`` (after a BOM); a trailing ``\\r``
    belongs to the line."""
    size = len(buf)
    found = [
        lo + np.flatnonzero(np.frombuffer(buf, dtype=np.uint8, count=min(_BLOCK, size - lo), offset=lo) == 10)
        for lo in range(0, size, _BLOCK)
    ]
    newlines = np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[first], newlines + 1]).astype(np.int64)
    ends = np.concatenate([newlines, [size]]).astype(np.int64)
    arr = np.frombuffer(buf, dtype=np.uint8)
    stripped = ends - (ends > starts) * (arr[np.maximum(ends - 1, 0)] == 13)
    keep = stripped > starts
    return starts[keep], ends[keep]


def parse_record(raw: bytes, where: str) -> dict:
    """Decode one record's bytes; malformed input raises :class:`SampleRejected` with its reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SampleRejected("invalid_utf8", f"{where}: {err}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise SampleRejected("json_malformed", f"{where}: {err}") from None
    if not isinstance(record, dict):
        raise SampleRejected("not_an_object", f"{where}: got {type(record).__name__}")
    return record


class RecordFile:
    """Indexed, lazily parsed records of a ``.json`` list or a ``.jsonl`` file.

    ``raw(i)`` gives the bytes, ``record(i)`` the parsed dict; ``sizes`` (bytes per record) and
    ``has_image`` (a cheap guess from the bytes) feed length-grouped batching without parsing. A record
    over ``max_record_bytes`` is never read: ``record(i)`` rejects it as ``record_too_large``. A damaged
    JSON list is refused here, with the place of the damage (see :mod:`yivl.data.json_index`).
    """

    def __init__(self, path: str | Path, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self.path = Path(path)
        self.max_record_bytes = int(max_record_bytes)
        if self.max_record_bytes < 1:
            raise YivlError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
        if not self.path.is_file():
            raise YivlError(f"data file not found: {self.path}; check the data config's path")
        self._fd: int | None = None
        self._pid = -1
        self.is_json_list = False  # a JSON array (else JSONL); set by the index
        with open(self.path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                self.starts = self.ends = np.zeros(0, dtype=np.int64)
                self.has_image = np.zeros(0, dtype=bool)
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                self.starts, self.ends = self._index(buf)
                self.has_image = self._image_flags(buf)

    def _index(self, buf: mmap.mmap) -> tuple[np.ndarray, np.ndarray]:
        bom = 3 if buf[:3] == b"\xef\xbb\xbf" else 0
        head = bytes(buf[bom : bom + 4096])
        skipped = len(head) - len(head.lstrip(b" \t\r\n"))
        if self.path.suffix != ".jsonl" and (self.path.suffix == ".json" or head[skipped:].startswith(b"[")):
            if not head[skipped:].startswith(b"["):
                raise YivlError(
                    f"{self.path} does not start with '['; a .json file must hold a list of records "
                    "(a file of one record per line is read as JSONL when named .jsonl)"
                )
            self.is_json_list = True
            return json_list_spans(buf, bom + skipped, self.path, self.max_record_bytes)
        return _jsonl_spans(buf, bom)

    def _image_flags(self, buf: mmap.mmap) -> np.ndarray:
        flags = np.zeros(len(self.starts), dtype=bool)
        positions = np.fromiter((m.start() for m in _IMAGE_KEY.finditer(buf)), dtype=np.int64)
        if len(positions) and len(self.starts):
            owner = np.searchsorted(self.starts, positions, side="right") - 1
            inside = (owner >= 0) & (positions < self.ends[np.maximum(owner, 0)])
            flags[owner[inside]] = True
        return flags

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def sizes(self) -> np.ndarray:
        """Bytes per record, shape ``[N]``."""
        return self.ends - self.starts

    def line_numbers(self) -> np.ndarray:
        """The 1-based line each record starts on, shape ``[N]`` (for messages; one pass over the file)."""
        if not len(self.starts):
            return np.zeros(0, dtype=np.int64)
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            newlines = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
            return np.searchsorted(newlines, self.starts) + 1

    def raw(self, i: int) -> bytes:
        """The bytes of record ``i``."""
        if self._fd is None or self._pid != os.getpid():  # one descriptor per (forked) process
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        start, end = int(self.starts[i]), int(self.ends[i])
        return os.pread(self._fd, end - start, start)

    def size_problem(self, i: int) -> str | None:
        """Why record ``i`` is too large to read (``record_too_large``), or None when it is not."""
        size = int(self.ends[i] - self.starts[i])
        if size <= self.max_record_bytes:
            return None
        return f"{self.path.name} record {i}: {size:,} bytes, over max_record_bytes={self.max_record_bytes:,}"

    def record(self, i: int) -> dict:
        """Record ``i`` parsed; raises :class:`SampleRejected` for a record over ``max_record_bytes``
        (before reading it), malformed JSON or invalid UTF-8."""
        problem = self.size_problem(i)
        if problem is not None:
            raise SampleRejected("record_too_large", problem)
        return parse_record(self.raw(i), f"{self.path.name} record {i}")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)
