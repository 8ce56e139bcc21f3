"""Local images: off unless api.allowed_local_media_path names folders; inside them, only regular files, and
one error for every path that is missing or not allowed (requests cannot probe which files exist)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from yivl.serving.api import create_app
from yivl.serving.engine import Engine
from yivl.serving.worker import GenerationWorker

from .conftest import MAX_IMAGE_BYTES, api_settings
from .helpers import answered_on_one_connection, image_message, png_bytes, serve
from .test_api_errors import body, check_error

UNAVAILABLE = (
    "messages[0].content[1].image_url: no image file this server may read is at that path; local files "
    "must be images under api.allowed_local_media_path"
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """allowed/ (an image, a link inside, a link out, a FIFO, a folder, a big file) beside secret/."""
    root = tmp_path_factory.mktemp("media")
    allowed, secret = root / "allowed", root / "secret"
    allowed.mkdir()
    secret.mkdir()
    (allowed / "cat.png").write_bytes(png_bytes())
    (secret / "key.png").write_bytes(png_bytes())
    (allowed / "inside.png").symlink_to(allowed / "cat.png")
    (allowed / "out.png").symlink_to(secret / "key.png")
    os.mkfifo(allowed / "fifo.png")
    (allowed / "folder.png").mkdir()
    (allowed / "big.png").write_bytes(b"\0" * (MAX_IMAGE_BYTES + 1))
    return root


@pytest.fixture(scope="module")
def media_url(engine: Engine, worker: GenerationWorker, media: Path) -> Iterator[str]:
    with serve(create_app(engine, worker, api_settings(local_media=(media / "allowed",)))) as url:
        yield url


def ask(url: str, image: str, client: httpx.Client | None = None) -> httpx.Response:
    payload = body(messages=[image_message(image)])
    if client is None:
        return httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=60)
    return answered_on_one_connection(client, url, payload, body())


def test_local_files_are_off_by_default(engine: Engine, worker: GenerationWorker, media: Path):
    with serve(create_app(engine, worker, api_settings(local_media=()))) as url:
        for image in ((media / "allowed" / "cat.png").as_uri(), str(media / "allowed" / "cat.png")):
            error = check_error(ask(url, image), 400, "file_urls_disabled", None)
            assert "api.allowed_local_media_path=[DIR]" in error["message"]


def test_allowed_files_are_read_by_url_bare_path_and_link_inside(media_url: str, media: Path):
    cat = media / "allowed" / "cat.png"
    for image in (cat.as_uri(), str(cat), (media / "allowed" / "inside.png").as_uri()):
        assert ask(media_url, image).status_code == 200, image


@pytest.mark.parametrize(
    "where",
    [
        "missing.png",
        "out.png",
        "fifo.png",
        "folder.png",
        "../secret/key.png",
        "%2e%2e/secret/key.png",
        "/etc/passwd",
        "/proc/self/environ",
        "file:///%2e%2e/%2e%2e/etc/passwd",
        "file:///etc/shadow",
    ],
)
def test_missing_and_forbidden_paths_get_one_error(media_url: str, media: Path, where: str):
    allowed = media / "allowed"
    if where.startswith("file:") or where.startswith("/"):
        images = [where]
    elif "%" in where:
        images = [f"file://{allowed}/{where}"]
    else:
        images = [f"file://{allowed}/{where}", f"{allowed}/{where}"]
    with httpx.Client(timeout=60) as client:
        for image in images:
            error = check_error(ask(media_url, image, client), 400, "invalid_image", None)
            assert error["message"] == UNAVAILABLE, image


def test_a_big_allowed_file_is_413_unread(media_url: str, media: Path):
    response = ask(media_url, (media / "allowed" / "big.png").as_uri())
    check_error(response, 413, "image_too_large", None)
