"""Lazy access to a JSON list or JSONL file of records through a byte-offset index.

A million-record file costs two int64 arrays here, not a million Python dicts: each record is read with
``os.pread`` and parsed only when asked for. JSON lists are indexed with a scan over structural
characters only (quotes, brackets, commas, escapes), which runs at regex speed on an ``mmap``.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from yivl.data.reasons import SampleRejected
from yivl.errors import YivlError

# A whole string literal (escapes included) is one match, so only brackets and commas cost a loop step.
_STRUCTURE = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[\[\]{},]', re.DOTALL)
_SPACE = frozenset(b" \t\r\n")
_IMAGE_KEY = re.compile(rb'"image"\s*:\s*[^\s,}n]')  # an "image" key whose value is not null


def _jsonl_spans(buf: mmap.mmap | bytes) -> tuple[np.ndarray, np.ndarray]:
    """``[start, end)`` of every non-empty line; a trailing ``\\r`` belongs to the line."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
    ends = np.concatenate([newlines, [len(arr)]]).astype(np.int64)
    stripped = ends - (ends > starts) * (arr[np.maximum(ends - 1, 0)] == 13)
    keep = stripped > starts
    return starts[keep], ends[keep]


def _json_list_spans(buf: mmap.mmap | bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``[start, end)`` of each top-level element of a JSON array (whitespace trimmed)."""
    depth, sep, closed = 0, -1, False
    starts: list[int] = []
    ends: list[int] = []
    for m in _STRUCTURE.finditer(buf):
        ch = buf[m.start()]
        if ch == 0x22:  # a string literal
            continue
        if ch in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth == 1:
                sep = m.start()
        elif ch in (0x5D, 0x7D):  # ] }
            depth -= 1
            if depth == 0:
                _add_element(buf, sep + 1, m.start(), starts, ends)
                closed = True
                break
        elif depth == 1:  # a top-level comma
            _add_element(buf, sep + 1, m.start(), starts, ends)
            sep = m.start()
    if not closed:
        raise YivlError(
            f"{path} is not a complete JSON list (unbalanced brackets or quotes); fix or re-export it"
        )
    return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def _add_element(buf: Any, start: int, end: int, starts: list[int], ends: list[int]) -> None:
    """Record ``[start, end)`` with surrounding whitespace trimmed; skip it when empty."""
    while start < end and buf[start] in _SPACE:
        start += 1
    while end > start and buf[end - 1] in _SPACE:
        end -= 1
    if start < end:
        starts.append(start)
        ends.append(end)


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
    ``has_image`` (a cheap guess from the bytes) feed length-grouped batching without parsing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise YivlError(f"data file not found: {self.path}; check the data config's path")
        self._fd: int | None = None
        self._pid = -1
        with open(self.path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                self.starts = self.ends = np.zeros(0, dtype=np.int64)
                self.has_image = np.zeros(0, dtype=bool)
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                self.starts, self.ends = self._index(buf)
                self.has_image = self._image_flags(buf)

    def _index(self, buf: mmap.mmap) -> tuple[np.ndarray, np.ndarray]:
        head = bytes(buf[:4096]).lstrip(b"\xef\xbb\xbf \t\r\n")
        if self.path.suffix != ".jsonl" and (self.path.suffix == ".json" or head.startswith(b"[")):
            if not head.startswith(b"["):
                raise YivlError(
                    f"{self.path} does not start with '['; a .json file must hold a list of records"
                )
            return _json_list_spans(buf, self.path)
        return _jsonl_spans(buf)

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

    def raw(self, i: int) -> bytes:
        """The bytes of record ``i``."""
        if self._fd is None or self._pid != os.getpid():  # one descriptor per (forked) process
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        start, end = int(self.starts[i]), int(self.ends[i])
        return os.pread(self._fd, end - start, start)

    def record(self, i: int) -> dict:
        """Record ``i`` parsed; raises :class:`SampleRejected` for malformed JSON or invalid UTF-8."""
        return parse_record(self.raw(i), f"{self.path.name} record {i}")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)
