"""Image files named by records: resolved inside their folder, opened only when regular, read bounded.

One helper for every tool that follows an ``image`` path from a record (data tools, training sources,
evaluation task files), so ``..``, absolute paths and symlinks out of the image folder, FIFOs, devices
and oversized files get the same reject reason everywhere.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from yivl.data.reasons import SampleRejected

DEFAULT_MAX_IMAGE_BYTES = 64 << 20
"""Largest image file (or shard member) read, in bytes: ``max_image_bytes`` / ``--max-image-bytes``."""

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def resolve_image_path(folder: str | Path, name: str, where: str, allow_outside: bool = False) -> Path:
    """``folder / name`` with every symlink resolved; outside ``folder`` is ``image_outside_folder``.

    Symlinks inside the folder that point to files inside it are fine. ``allow_outside`` (the
    ``allow_images_outside_folder`` option) accepts any path. The file need not exist yet: a missing
    one is reported when it is read.
    """
    try:
        root = os.path.realpath(folder)
        path = os.path.realpath(os.path.join(root, name))
    except (ValueError, OSError) as err:  # an embedded NUL byte, a symlink loop
        raise SampleRejected("image_missing", f"{where}: {name!r} is not a usable path ({err})") from None
    if not allow_outside and os.path.commonpath([root, path]) != root:
        raise SampleRejected(
            "image_outside_folder",
            f"{where}: image {name!r} resolves to {path}, outside the image folder {root}; "
            "fix the path or set allow_images_outside_folder (--allow-images-outside-folder)",
        )
    return Path(path)


def check_image_size(size: int, where: str, max_bytes: int) -> None:
    """``image_file_too_large`` when ``size`` bytes exceed ``max_bytes`` (files, shard members, base64)."""
    if size > max_bytes:
        raise SampleRejected(
            "image_file_too_large",
            f"{where}: the image is {size} bytes, over max_image_bytes={max_bytes}; "
            "remove it or raise max_image_bytes (--max-image-bytes)",
        )


def _not_regular(mode: int) -> str | None:
    """What a non-regular file is, for the message; None for a regular file."""
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def _check_regular(mode: int, path: str | Path, where: str) -> None:
    kind = _not_regular(mode)
    if kind is not None:
        raise SampleRejected(
            "image_not_regular_file", f"{where}: {path} is {kind}, not an image file; fix the `image` path"
        )


def check_image_file(path: str | Path, where: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
    """What can be known without opening ``path``: it exists, is a regular file, is at most ``max_bytes``
    (``image_missing``, ``image_not_regular_file``, ``image_file_too_large``)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SampleRejected("image_missing", f"{where}: {path} does not exist") from None
    except OSError as err:
        raise SampleRejected("image_missing", f"{where}: cannot read {path} ({err.strerror})") from None
    _check_regular(st.st_mode, path, where)
    check_image_size(st.st_size, where, max_bytes)


def read_image_file(path: str | Path, where: str, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else raises :class:`SampleRejected`.

    The type and size are checked with ``stat`` before opening; the open is non-blocking (a FIFO
    swapped in after the check cannot block it) and checked again with ``fstat``; at most
    ``max_bytes + 1`` bytes are read, so files that report size 0 (``/proc``) are bounded too.
    """
    check_image_file(path, where, max_bytes)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise SampleRejected("image_missing", f"{where}: {path} does not exist") from None
    except OSError as err:
        raise SampleRejected("image_missing", f"{where}: cannot read {path} ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        _check_regular(st.st_mode, path, where)
        check_image_size(st.st_size, where, max_bytes)
        data = _read_at_most(fd, max_bytes + 1)
    except OSError as err:
        raise SampleRejected("image_missing", f"{where}: cannot read {path} ({err.strerror})") from None
    finally:
        os.close(fd)
    check_image_size(len(data), where, max_bytes)
    if not data:
        raise SampleRejected("image_empty", f"{where}: {path} is zero bytes")
    return data


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
