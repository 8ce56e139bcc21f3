"""image_url parts -> images: data URLs; local files and remote URLs only as far as the server allows.

Local files: see :mod:`yivl.serving.local_media`; remote URLs: :mod:`yivl.serving.remote_fetch`.
An image's pixel count is read from its header and checked before anything is decoded; an image sent
again (the same bytes) can come from a :class:`~yivl.serving.image_cache.PixelCache` without decoding.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable, Hashable
from contextlib import nullcontext

import torch
from PIL import Image

from yivl.data.images import load_image
from yivl.errors import YivlError
from yivl.serving.api_errors import ApiError, bad_request
from yivl.serving.image_cache import PixelCache
from yivl.serving.image_policy import ImagePolicy
from yivl.serving.local_media import local_image_bytes
from yivl.serving.openai_format import ImageRef
from yivl.serving.remote_fetch import download


def fetch_pixels(
    ref: ImageRef,
    policy: ImagePolicy,
    to_pixels: Callable[[Image.Image], torch.Tensor],
    decoding: threading.BoundedSemaphore | None = None,
    cache: PixelCache | None = None,
    settings: Hashable = (),
) -> torch.Tensor:
    """The pixels of the image behind ``ref``: ``to_pixels`` of it decoded (RGB); HTTP 400/413 naming
    ``ref.param`` when it cannot be used.

    With ``cache``, an image whose bytes were seen before under the same ``settings`` (what, besides the
    bytes, decides the pixels) is not decoded again; a refused image is refused every time. The decode and
    ``to_pixels`` hold ``decoding`` when given: it bounds how many images are in the decoder at once.
    """
    data = image_bytes(ref, policy)

    def make() -> torch.Tensor:
        with decoding if decoding is not None else nullcontext():
            try:
                return to_pixels(load_image(data, max_pixels=policy.max_pixels))
            except YivlError as exc:
                raise bad_request(f"{ref.param}: {exc}", param=ref.param, code="invalid_image") from None

    if cache is None:
        return make()
    return cache.get_or_make(data, (policy.max_pixels, settings), make)


def image_bytes(ref: ImageRef, policy: ImagePolicy) -> bytes:
    """The bytes of the image behind ``ref`` (a data URL, an allowed local file, an allowed download)."""
    scheme = ref.url.partition(":")[0].lower() if ":" in ref.url.split("/", 1)[0] else ""
    if scheme == "data":
        return _data_url_bytes(ref, policy)
    if scheme in ("file", ""):
        return local_image_bytes(ref.url, ref.param, policy.allowed_local_media_path, policy.max_image_bytes)
    if scheme in ("http", "https"):
        return _remote_bytes(ref, policy)
    raise bad_request(
        f"{ref.param}: unsupported URL scheme '{scheme[:20]}'; use a data: URL",
        param=ref.param,
        code="invalid_image_url",
    )


def _too_large(ref: ImageRef, size: int, policy: ImagePolicy) -> ApiError:
    return ApiError(
        413,
        f"{ref.param}: the image is {size} bytes; this server takes at most {policy.max_image_bytes}",
        param=ref.param,
        code="image_too_large",
    )


def _data_url_bytes(ref: ImageRef, policy: ImagePolicy) -> bytes:
    """``data:image/png;base64,...`` -> bytes (base64 only: images are binary)."""
    header, sep, payload = ref.url.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise bad_request(
            f"{ref.param}: a data URL must look like data:image/png;base64,<data>",
            param=ref.param,
            code="invalid_image_url",
        )
    if len(payload) * 3 // 4 > policy.max_image_bytes:
        raise _too_large(ref, len(payload) * 3 // 4, policy)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(
            f"{ref.param}: the data URL is not valid base64", param=ref.param, code="invalid_image_url"
        ) from None


def _remote_bytes(ref: ImageRef, policy: ImagePolicy) -> bytes:
    """Download an http(s) image, at most ``max_image_bytes``, only when remote images are enabled."""
    if not policy.allow_remote:
        raise bad_request(
            f"{ref.param}: remote image URLs are disabled on this server; send the image as a data URL "
            "(or start it with api.allow_remote_images=true)",
            param=ref.param,
            code="remote_images_disabled",
        )
    return download(ref.url, ref.param, policy)
