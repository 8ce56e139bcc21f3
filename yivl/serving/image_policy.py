"""What the API accepts as an image: sizes, local folders, remote downloads (``api.*`` keys)."""

from __future__ import annotations

from dataclasses import dataclass

from yivl.data.images import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ImagePolicy:
    """What the API accepts as an image and how big it may be.

    ``allowed_local_media_path``: directories (already resolved, see
    :func:`~yivl.serving.local_media.resolve_roots`) whose files ``file://`` URLs and bare paths may
    name; empty turns local files off. ``remote_timeout_s`` bounds a whole download, redirects included;
    ``remote_allowed_networks`` are CIDR blocks a download may reach although they are not public.
    """

    max_image_bytes: int = 20_000_000
    max_pixels: int = DEFAULT_MAX_PIXELS
    allowed_local_media_path: tuple[str, ...] = ()
    allow_remote: bool = False
    remote_timeout_s: float = 10.0
    remote_max_redirects: int = 5
    remote_allowed_networks: tuple[str, ...] = ()
