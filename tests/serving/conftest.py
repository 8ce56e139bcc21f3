"""Serving fixtures: the tiny model behind one engine and worker, and API servers on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from yivl.models.generation import GenerationSettings
from yivl.serving.api import ApiSettings, create_app
from yivl.serving.engine import Engine
from yivl.serving.image_urls import ImagePolicy
from yivl.serving.local_media import resolve_roots
from yivl.serving.worker import GenerationWorker

from .helpers import serve

MAX_REQUEST_BYTES = 400_000
MAX_IMAGE_BYTES = 100_000
ASSETS = Path(__file__).resolve().parents[2] / "assets"
LOOPBACK_ONLY = ("127.0.0.1/32",)
"""Test-only: the image servers the tests start listen on 127.0.0.1, which a default server refuses."""


@pytest.fixture(scope="session")
def engine(tiny_checkpoint: Path) -> Engine:
    return Engine.from_path(tiny_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def worker(engine: Engine) -> Iterator[GenerationWorker]:
    worker = GenerationWorker(engine, max_queue=8)
    yield worker
    worker.close()


def api_settings(
    allow_remote: bool = False,
    networks: tuple[str, ...] = LOOPBACK_ONLY,
    local_media: tuple[Path, ...] = (ASSETS,),
    remote_timeout_s: float = 5.0,
    **changes: object,
) -> ApiSettings:
    """Small limits so the size tests send little; greedy, short answers by default; local files under
    assets/; remote images (when allowed) from 127.0.0.1 too."""
    images = ImagePolicy(
        max_image_bytes=MAX_IMAGE_BYTES,
        max_pixels=4_000_000,
        allowed_local_media_path=resolve_roots(local_media),
        allow_remote=allow_remote,
        remote_timeout_s=remote_timeout_s,
        remote_allowed_networks=networks,
    )
    settings = ApiSettings(
        max_request_bytes=MAX_REQUEST_BYTES,
        request_timeout_s=60,
        images=images,
        defaults=GenerationSettings(temperature=0.0, max_new_tokens=12),
    )
    return dataclasses.replace(settings, **changes)


@pytest.fixture(scope="module")
def api_url(engine: Engine, worker: GenerationWorker) -> Iterator[str]:
    """The API with default policy (no key, no remote images)."""
    with serve(create_app(engine, worker, api_settings())) as url:
        yield url
