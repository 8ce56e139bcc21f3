"""Where a PNG or JPEG file's image ends, so bytes appended after it are not copied into shards.

Image decoders stop at the image's end and ignore what follows, so a valid 8x8 PNG followed by 2 GB of
zeros decodes fine; passing its bytes through verbatim would copy the zeros too.
"""

from __future__ import annotations

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_end(data: bytes, fmt: str | None) -> int | None:
    """Offset just past the image in ``data`` (``len(data)`` when nothing trails it); None when the
    end cannot be found reliably (then the caller re-encodes)."""
    if fmt == "PNG":
        return _png_end(data)
    if fmt == "JPEG":
        return _jpeg_end(data)
    return None


def _png_end(data: bytes) -> int | None:
    """Past the CRC of the IEND chunk."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length  # length, type, data, CRC
        if end > len(data):
            return None
        if data[pos + 4 : pos + 8] == b"IEND":
            return end
        pos = end
    return None


def _jpeg_end(data: bytes) -> int | None:
    """Past the EOI marker that follows the last scan (segments are skipped by their length)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:
            return None
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            return None
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return pos
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            continue
        if pos + 2 > size:
            return None
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            return None
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next real marker
            pos = _scan_end(data, pos)
            if pos is None:
                return None
    return None


def _scan_end(data: bytes, pos: int) -> int | None:
    """Offset of the first marker after entropy-coded data (0xFF00 stuffing and RSTn belong to it)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return None
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos += 2
            continue
        return pos
