"""Local image files named by a request (``file://`` URLs and bare paths), only inside allowed folders.

Off unless ``api.allowed_local_media_path`` names directories (as vLLM's ``--allowed-local-media-path``).
A path is percent-decoded (URLs only), refused if it has a ``..`` part, resolved with every symlink
followed, and must land inside an allowed directory and be a regular file. A path that is missing,
outside, a symlink leading out, a directory, a FIFO or unreadable gets one and the same error, so
requests cannot tell which files exist. Files inside get the usual size and image checks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from yivl.data.image_files import read_image_file
from yivl.data.reasons import SampleRejected
from yivl.serving.api_errors import ApiError, bad_request


def resolve_roots(paths: Sequence[str | Path]) -> tuple[str, ...]:
    """The allowed directories, symlinks resolved (as every requested path will be)."""
    return tuple(os.path.realpath(os.path.expanduser(str(p))) for p in paths)


def local_image_bytes(url: str, param: str, roots: Sequence[str], max_bytes: int) -> bytes:
    """The bytes of the file ``url`` names (``file:///...`` or a bare path) when it is allowed."""
    if not roots:
        raise bad_request(
            f"{param}: local image files are off on this server; send the image as a data URL (or start the "
            "server with api.allowed_local_media_path=[DIR] to serve files under DIR)",
            param=param,
            code="file_urls_disabled",
        )
    path = _contained(_requested_path(url, param), roots)
    if path is None:
        raise _unavailable(param)
    try:  # regular files only, opened non-blocking, read bounded (the file may change after the checks)
        return read_image_file(path, param, max_bytes)
    except SampleRejected as exc:
        if exc.reason == "image_file_too_large":
            raise ApiError(413, exc.detail, param=param, code="image_too_large") from None
        raise _unavailable(param) from None


def _requested_path(url: str, param: str) -> str:
    """``file:`` URL -> its decoded path; anything else is a bare path, taken as it is."""
    if not url.lower().startswith("file:"):
        return url
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise bad_request(
            f"{param}: file URLs must name a local file (file:///path)", param=param, code="invalid_image_url"
        )
    return unquote(parts.path)


def _contained(raw: str, roots: Sequence[str]) -> str | None:
    """``raw`` resolved, when it has no ``..`` part and lands inside one of ``roots``; None otherwise."""
    if not raw or "\0" in raw or ".." in Path(raw).parts:
        return None
    try:
        path = os.path.realpath(raw)
    except (OSError, ValueError):
        return None
    for root in roots:
        if os.path.commonpath([root, path]) == root:
            return path
    return None


def _unavailable(param: str) -> ApiError:
    return bad_request(
        f"{param}: no image file this server may read is at that path; local files must be images under "
        "api.allowed_local_media_path",
        param=param,
        code="invalid_image",
    )
