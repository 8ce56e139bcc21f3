"""The API's cache of preprocessed images: a resent image is not decoded again, gives the same pixels,
stays within its bounds, is never confused with another image, and a refused image stays refused."""

from __future__ import annotations

import dataclasses
import threading
import time

import httpx
import pytest
import torch
from PIL import Image

from yivl.serving import image_urls
from yivl.serving.api import create_app, request_pixels
from yivl.serving.api_errors import ApiError
from yivl.serving.engine import Engine
from yivl.serving.image_cache import PixelCache
from yivl.serving.openai_format import ImageRef
from yivl.serving.worker import GenerationWorker

from .conftest import api_settings
from .helpers import data_url, huge_gif, image_message, png_bytes, serve
from .test_api_errors import body, check_error

PARAM = "messages[0].content[1].image_url"


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the images the API decodes (one entry per decode, its byte count)."""
    seen: list[int] = []
    real = image_urls.load_image

    def counting(data: bytes, max_pixels: int) -> Image.Image:
        seen.append(len(data))
        return real(data, max_pixels=max_pixels)

    monkeypatch.setattr(image_urls, "load_image", counting)
    return seen


def ref(data: bytes, mime: str = "image/png") -> ImageRef:
    return ImageRef(data_url(data, mime), PARAM)


def test_a_resent_image_is_not_decoded_again_and_gives_the_same_pixels(engine: Engine, decodes: list[int]):
    cache = PixelCache()
    image = png_bytes((80, 50), (10, 200, 40))
    first = request_pixels(engine, ref(image), api_settings(), cache=cache)
    again = request_pixels(engine, ref(image), api_settings(), cache=cache)
    assert len(decodes) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(again, first)
    assert torch.equal(engine.pixels(again), engine.pixels(image))  # what the engine makes of the file


def test_another_image_or_other_settings_are_not_confused(engine: Engine, decodes: list[int]):
    cache = PixelCache()
    red, green = png_bytes(color=(200, 30, 30)), png_bytes(color=(30, 200, 30))
    reds = request_pixels(engine, ref(red), api_settings(), cache=cache)
    greens = request_pixels(engine, ref(green), api_settings(), cache=cache)
    assert len(decodes) == 2 and not torch.equal(reds, greens)
    assert torch.equal(greens, engine.pixels(green)) and torch.equal(reds, engine.pixels(red))
    # the same bytes under another decoding limit are decoded (and checked) again
    tighter = api_settings()
    tighter.images = dataclasses.replace(tighter.images, max_pixels=1_000_000)
    request_pixels(engine, ref(red), tighter, cache=cache)
    assert len(decodes) == 3 and len(cache) == 3


def test_the_cache_keeps_the_last_images_within_its_entry_and_byte_bounds():
    pixels = {i: torch.full((3, 4, 4), float(i)) for i in range(4)}  # 192 bytes each
    made: list[int] = []

    def get(cache: PixelCache, i: int) -> torch.Tensor:
        return cache.get_or_make(bytes([i]), (), lambda: made.append(i) or pixels[i])

    by_entries = PixelCache(max_entries=2, max_bytes=10_000)
    for i in (0, 1, 0, 2):  # 0 was used after 1, so 1 is the oldest when 2 arrives
        get(by_entries, i)
    assert (len(by_entries), by_entries.nbytes) == (2, 384)
    made.clear()
    get(by_entries, 0), get(by_entries, 2), get(by_entries, 1)
    assert made == [1]

    by_bytes = PixelCache(max_entries=10, max_bytes=400)
    for i in range(4):
        get(by_bytes, i)
    assert (len(by_bytes), by_bytes.nbytes) == (2, 384)
    made.clear()
    assert torch.equal(get(by_bytes, 3), pixels[3]) and made == []

    too_small = PixelCache(max_entries=10, max_bytes=100)  # no tensor fits: every image is made
    get(too_small, 0), get(too_small, 0)
    assert (len(too_small), too_small.nbytes, made[-2:]) == (0, 0, [0, 0])


def _at_once(cache: PixelCache, make, threads: int = 6) -> list:
    """``threads`` threads asking ``cache`` for one image together; each one's tensor or exception."""
    results: list = [None] * threads
    gate = threading.Barrier(threads)

    def one(i: int) -> None:
        gate.wait()
        try:
            results[i] = cache.get_or_make(b"one image", ("448",), make)
        except ValueError as exc:
            results[i] = exc

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    return results


def test_the_same_image_arriving_at_once_is_made_once_and_shared():
    cache, made = PixelCache(), []

    def make() -> torch.Tensor:
        made.append(1)
        time.sleep(0.2)  # the others arrive while it is being made
        return torch.zeros(3, 4, 4)

    results = _at_once(cache, make)
    assert len(made) == 1 and all(r is results[0] for r in results)
    assert (cache.misses, cache.hits, cache._making) == (1, 5, {})


def test_when_the_first_maker_fails_each_waiter_makes_it_itself_and_fails_alike():
    cache, made = PixelCache(), []

    def make() -> torch.Tensor:
        made.append(1)
        time.sleep(0.1)
        raise ValueError("not an image")

    results = _at_once(cache, make, threads=4)
    assert [str(r) for r in results] == ["not an image"] * 4  # each request gets its own error
    assert len(made) == 4 and len(cache) == 0 and cache._making == {}


def test_size_zero_turns_the_cache_off(engine: Engine, decodes: list[int]):
    cache = PixelCache(max_entries=0)
    image = png_bytes()
    for _ in range(2):
        request_pixels(engine, ref(image), api_settings(), cache=cache)
    assert len(decodes) == 2 and len(cache) == 0 and cache.hits == 0


@pytest.mark.parametrize(
    ("data", "mime", "says"),
    [
        (b"\x89PNG\r\n\x1a\n not really", "image/png", "not an image"),
        (png_bytes()[:60], "image/png", "truncated or corrupt"),
        (huge_gif(3000), "image/gif", "3000x3000 = 9000000 pixels, over the limit of 4000000"),
    ],
)
def test_a_refused_image_is_refused_every_time_and_not_kept(
    engine: Engine, decodes: list[int], data: bytes, mime: str, says: str
):
    cache = PixelCache()
    messages = []
    for _ in range(2):
        with pytest.raises(ApiError) as info:
            request_pixels(engine, ref(data, mime), api_settings(), cache=cache)
        assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_image", PARAM)
        messages.append(info.value.message)
    assert says in messages[0] and messages[0] == messages[1]
    assert len(decodes) == 2 and len(cache) == 0


def test_the_server_decodes_a_resent_image_once_and_never_writes_into_it(
    engine: Engine, worker: GenerationWorker, decodes: list[int]
):
    app = create_app(engine, worker, api_settings())
    image = png_bytes((70, 90), (120, 40, 220))
    chat = body(messages=[image_message(data_url(image))])
    with serve(app) as url, httpx.Client(timeout=60) as client:
        answers = [client.post(f"{url}/v1/chat/completions", json=chat) for _ in range(2)]
        refused = client.post(
            f"{url}/v1/chat/completions", json=body(messages=[image_message(data_url(b"nope"))])
        )
    assert [a.status_code for a in answers] == [200, 200]
    texts = [a.json()["choices"][0]["message"]["content"] for a in answers]
    assert texts[0] == texts[1]
    check_error(refused, 400, "invalid_image", PARAM)
    cache: PixelCache = app.state.pixel_cache
    assert (cache.hits, cache.misses, len(cache), len(decodes)) == (1, 2, 1, 2)
    (kept,) = cache._entries.values()
    assert torch.equal(kept, engine.preprocess(image))  # unchanged by two generations
