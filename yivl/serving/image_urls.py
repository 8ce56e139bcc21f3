"""image_url parts -> images: data URLs, local file URLs, and remote URLs only when the server allows them."""

from __future__ import annotations

import base64
import binascii
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from PIL import Image

from yivl.data.image_files import read_image_file
from yivl.data.images import DEFAULT_MAX_PIXELS, load_image
from yivl.data.reasons import SampleRejected
from yivl.errors import YivlError
from yivl.serving.api_errors import ApiError, bad_request
from yivl.serving.openai_format import ImageRef


@dataclass(frozen=True)
class ImagePolicy:
    """What the API accepts as an image and how big it may be."""

    max_image_bytes: int = 20_000_000
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_file_urls: bool = True
    allow_remote: bool = False
    remote_timeout_s: float = 10.0


def fetch_image(ref: ImageRef, policy: ImagePolicy) -> Image.Image:
    """Decode the image behind ``ref`` (RGB); HTTP 400/413 naming ``ref.param`` when it cannot be used."""
    scheme = urlparse(ref.url).scheme.lower()
    if scheme == "data":
        data = _data_url_bytes(ref, policy)
    elif scheme == "file":
        data = _file_bytes(ref, policy)
    elif scheme in ("http", "https"):
        data = _remote_bytes(ref, policy)
    else:
        raise bad_request(
            f"{ref.param}: unsupported URL scheme '{scheme or ref.url[:20]}'; use a data: or file: URL",
            param=ref.param,
            code="invalid_image_url",
        )
    try:
        return load_image(data, max_pixels=policy.max_pixels)
    except YivlError as exc:
        raise bad_request(f"{ref.param}: {exc}", param=ref.param, code="invalid_image") from None


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


def _file_bytes(ref: ImageRef, policy: ImagePolicy) -> bytes:
    """``file:///abs/path.png`` on this machine (only when the server allows file URLs)."""
    if not policy.allow_file_urls:
        raise bad_request(
            f"{ref.param}: file URLs are disabled here (api.allow_file_urls=false); send a data URL",
            param=ref.param,
            code="file_urls_disabled",
        )
    parsed = urlparse(ref.url)
    if parsed.netloc not in ("", "localhost"):
        raise bad_request(f"{ref.param}: file URLs must name a local file", param=ref.param)
    path = Path(url2pathname(unquote(parsed.path)))
    if not path.is_file():
        raise bad_request(f"{ref.param}: no such file: {path}", param=ref.param, code="invalid_image")
    size = path.stat().st_size
    if size > policy.max_image_bytes:
        raise _too_large(ref, size, policy)
    try:  # regular files only, opened non-blocking, read bounded (the file may change after the checks)
        return read_image_file(path, ref.param, policy.max_image_bytes)
    except SampleRejected as exc:
        status = 413 if exc.reason == "image_file_too_large" else 400
        raise ApiError(status, exc.detail, param=ref.param, code="invalid_image") from None


def _remote_bytes(ref: ImageRef, policy: ImagePolicy) -> bytes:
    """Download an http(s) image, at most ``max_image_bytes``, only when remote images are enabled."""
    if not policy.allow_remote:
        raise bad_request(
            f"{ref.param}: remote image URLs are disabled on this server; send the image as a data URL "
            "(or start it with api.allow_remote_images=true)",
            param=ref.param,
            code="remote_images_disabled",
        )
    request = urllib.request.Request(ref.url, headers={"User-Agent": "yivl"})
    try:
        with urllib.request.urlopen(request, timeout=policy.remote_timeout_s) as response:
            data = response.read(policy.max_image_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise bad_request(
            f"{ref.param}: could not download the image: {exc}", param=ref.param, code="invalid_image_url"
        ) from None
    if len(data) > policy.max_image_bytes:
        raise _too_large(ref, len(data), policy)
    return data
