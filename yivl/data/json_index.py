"""Byte-offset index of a JSON list's elements that agrees with a real JSON parse, or refuses the file.

Each element is matched by one regular expression that holds JSON's grammar (as Python's ``json``
reads it) for values nested up to :data:`FAST_DEPTH` deep: strings with their escapes, numbers, literals,
objects and arrays with exact commas and colons. That runs in C on an ``mmap``, about as fast as
``json.load`` but with no object built. An element it does not match (deeper, or damaged) is scanned
bracket by bracket and parsed with ``json.loads``, which names the damage. So a file ``json.load``
refuses is refused here, with the line, column and byte offset where ``json`` stops, and the index
never holds fewer records than the file. Invalid UTF-8 inside a string is left to the record
(``invalid_utf8``): it cannot move a boundary.
"""

from __future__ import annotations

import json
import mmap
import re
from array import array
from pathlib import Path

import numpy as np

from yivl.errors import YivlError

FAST_DEPTH = 6
"""Nesting depth the one-expression check covers (a LLaVA record is 3 deep)."""

_WS = rb"[ \t\n\r]*+"
_STR = rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"'
_NUM = rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][-+]?[0-9]++)?+"
_SCALAR = _STR + rb"|" + _NUM + rb"|true|false|null|NaN|Infinity|-Infinity"


def _nest(value: bytes) -> bytes:
    """A JSON value whose objects and arrays hold ``value``s. A comma must be followed by another member
    (a key's quote, or anything but ``]``), so trailing and doubled commas never match."""
    member = _STR + _WS + b":" + _WS + value + _WS + rb"(?:," + _WS + rb'(?=")|(?=\}))'
    item = value + _WS + rb"(?:," + _WS + rb"(?=[^\],])|(?=\]))"
    obj = rb"\{" + _WS + b"(?:" + member + rb")*+\}"
    arr = rb"\[" + _WS + b"(?:" + item + rb")*+\]"
    return b"(?>" + _SCALAR + b"|" + obj + b"|" + arr + b")"


def _value(depth: int) -> bytes:
    value = b"(?>" + _SCALAR + b")"
    for _ in range(depth):
        value = _nest(value)
    return value


_ELEMENT = re.compile(_WS + b"(" + _value(FAST_DEPTH) + b")" + _WS + rb"(?=[,\]])")
# One match per bracket or comma: whitespace, scalars and whole strings before it go in the same match.
# A gap between matches is a quote that never closes.
_STEP = re.compile(rb'(?:[^"\[\]{},]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+([\[\]{},])', re.DOTALL)
_FILLER = re.compile(rb'(?:[^"\[\]{},]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+', re.DOTALL)
_SPACE = re.compile(rb"[ \t\r\n]*+")
_CLOSES = {0x5D: 0x5B, 0x7D: 0x7B}  # ] -> [, } -> {
_BLOCK = 64 << 20  # bytes per numpy pass when counting lines


class _Damage(Exception):
    def __init__(self, offset: int, what: str) -> None:
        super().__init__(what)
        self.offset, self.what = offset, what


def _trimmed(buf, start: int, end: int) -> tuple[int, int]:
    start = _SPACE.match(buf, start, end).end()
    while end > start and buf[end - 1] in b" \t\r\n":
        end -= 1
    return start, end


def _json_damage(buf, start: int, end: int, cut: bool) -> _Damage | None:
    """Where ``json.loads`` stops in ``buf[start:end]`` (one element), or None. With ``cut`` the region is
    the start of a longer text, so stopping at its end (or in a string running past it) is no damage."""
    text = bytes(buf[start:end]).decode("utf-8", "surrogateescape")
    try:
        json.loads(text)
        return None
    except json.JSONDecodeError as err:
        at = min(err.pos, len(text))
        if cut and (at >= len(text.rstrip()) or err.msg.startswith("Unterminated string")):
            return None
        offset = start + len(text[:at].encode("utf-8", "surrogateescape"))
        what = "expecting ',' delimiter" if err.msg == "Extra data" else err.msg.removesuffix(" at")
        return _Damage(offset, what[0].lower() + what[1:])  # in a list, more after a value is a lost comma


def _scan_element(buf, pos: int) -> int:
    """Offset of the ``,`` or ``]`` ending the element that starts at ``pos`` (brackets checked)."""
    stack = bytearray(b"[")
    for m in _STEP.finditer(buf, pos):
        if m.start() != pos:
            raise _Damage(_FILLER.match(buf, pos).end(), "a string is not terminated (a '\"' never closes)")
        pos = m.end()
        ch = buf[pos - 1]
        if ch in (0x5B, 0x7B):
            stack.append(ch)
        elif ch == 0x2C:
            if len(stack) == 1:
                return pos - 1
        elif stack[-1] != _CLOSES[ch]:
            raise _Damage(pos - 1, f"'{chr(ch)}' does not close the open '{chr(stack[-1])}'")
        else:
            stack.pop()
            if not stack:
                return pos - 1
    tail = _FILLER.match(buf, pos).end()
    if tail < len(buf):
        raise _Damage(tail, "a string is not terminated (a '\"' never closes)")
    raise _Damage(len(buf), f"the file ends inside the list ({len(stack)} bracket(s) still open)")


def _slow_element(buf, pos: int, count: int, skip_over: int) -> tuple[int, int, int]:
    """``(start, end, separator)`` of an element the expression did not match: deeper than
    :data:`FAST_DEPTH`, over the size limit, or damaged (then :class:`_Damage` says where)."""
    try:
        sep = _scan_element(buf, pos)
    except _Damage as damage:
        start, _ = _trimmed(buf, pos, damage.offset)
        earlier = _json_damage(buf, start, min(damage.offset, start + skip_over), cut=True)
        raise (earlier if earlier is not None and earlier.offset < damage.offset else damage) from None
    start, end = _trimmed(buf, pos, sep)
    if start == end and (buf[sep] == 0x2C or count):
        raise _Damage(sep, "an empty element (two commas in a row, or a comma next to '[' or ']')")
    if start < end:
        damage = _json_damage(buf, start, min(end, start + skip_over), cut=end - start > skip_over)
        if damage is not None:
            raise damage
    return start, end, sep


def _elements(buf, open_pos: int, starts: array, ends: array, skip_over: int) -> int:
    """Append every element's span; return the offset of the list's closing ``]``."""
    pos = open_pos + 1
    while True:
        m = _ELEMENT.match(buf, pos)
        if m is not None:
            start, end, sep = m.start(1), m.end(1), m.end()
        else:
            start, end, sep = _slow_element(buf, pos, len(starts), skip_over)
        if start < end:
            starts.append(start)
            ends.append(end)
        if buf[sep] == 0x5D:
            return sep
        pos = sep + 1


def _where(buf, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of byte ``offset``."""
    line, line_start = 1, 0
    for lo in range(0, offset, _BLOCK):
        block = np.frombuffer(buf, dtype=np.uint8, count=min(_BLOCK, offset - lo), offset=lo)
        newlines = np.flatnonzero(block == 10)
        if len(newlines):
            line += len(newlines)
            line_start = lo + int(newlines[-1]) + 1
    if offset <= line_start:
        return line, 1
    prefix = np.frombuffer(buf, dtype=np.uint8, count=offset - line_start, offset=line_start)
    return line, int(np.count_nonzero((prefix & 0xC0) != 0x80)) + 1  # continuation bytes are no char


def json_list_spans(
    buf: mmap.mmap | bytes, open_pos: int, path: Path, skip_over: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[start, end)`` of each element of the JSON list whose ``[`` is at ``open_pos`` (whitespace
    trimmed). A file ``json.load`` would refuse is refused here: one line with the place and the fix.
    An element over ``skip_over`` bytes that the expression cannot check is checked for brackets and
    strings, and parsed only up to ``skip_over`` bytes (it is rejected unread as too large)."""
    starts, ends = array("q"), array("q")
    try:
        close = _elements(buf, open_pos, starts, ends, skip_over)
        tail = _SPACE.match(buf, close + 1).end()
        if tail < len(buf):
            raise _Damage(tail, "more data after the list's closing ']'")
    except _Damage as damage:
        line, column = _where(buf, damage.offset)
        raise YivlError(
            f"{path} is not valid JSON at line {line} column {column} (byte {damage.offset}): {damage.what}; "
            f"`python -m json.tool {path.name}` shows the place, or convert the file to JSONL (one record "
            "per line) so a damaged line is rejected alone"
        ) from None
    return np.frombuffer(starts, dtype=np.int64).copy(), np.frombuffer(ends, dtype=np.int64).copy()
