"""OpenAI-compatible HTTP API: ``POST /v1/chat/completions`` (plain or streamed) and ``GET /v1/models``.

    python infer.py mode=api model.path=/models/Yi-VL-6B      # then point an OpenAI client at it

Every request goes through the one :class:`~yivl.serving.worker.GenerationWorker`, so concurrent clients
queue instead of corrupting each other. Bad requests get an OpenAI-style error body and the server goes on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from yivl.constants import STOP_STRING
from yivl.errors import YivlError
from yivl.models.generation import Generation, GenerationSettings
from yivl.models.image_prefix import pixel_key
from yivl.serving.api_errors import ApiError, as_api_error, bad_request, server_busy
from yivl.serving.api_guard import HostCheck, Slots, check_json, check_key
from yivl.serving.api_stream import Prepared, completion_body, sse_chunks
from yivl.serving.engine import Engine
from yivl.serving.engine import Request as EngineRequest
from yivl.serving.image_cache import PixelCache
from yivl.serving.image_urls import ImagePolicy, fetch_pixels
from yivl.serving.openai_format import (
    ChatRequest,
    ImageRef,
    SystemPolicy,
    UnsupportedPolicy,
    invalid_value,
    model_not_found,
    parse_request,
    to_conversation,
)
from yivl.serving.prompt_bound import check_text_fits, too_long
from yivl.serving.worker import Arrival, AsyncEventStream, GenerationWorker, WorkerBusy

log = logging.getLogger(__name__)
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
"""Codes of the errors the router itself raises (unknown path, a method the path does not take)."""


@dataclass
class ApiSettings:
    """Server policy; ``defaults`` fill what a request leaves out (temperature, top_p, max_tokens).

    ``host`` is the bind address the ``Host`` header is checked against (``allowed_hosts`` adds names,
    ``*`` turns the check off); ``cors_origins`` are the web origins allowed to call (none: CORS off);
    ``max_parsing`` requests are read and parsed at once, ``max_decodes`` images decoded at once; the
    pixels of the last ``image_cache_size`` images (at most ``image_cache_bytes``) are kept by content.
    """

    model_name: str = "yi-vl"
    api_key: str | None = None
    host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 30_000_000
    max_parsing: int = 16
    max_decodes: int = 2
    image_cache_size: int = 32
    image_cache_bytes: int = 200_000_000
    max_n: int = 4
    request_timeout_s: float = 600.0
    system_messages: SystemPolicy = "use"
    unsupported_fields: UnsupportedPolicy = "error"
    images: ImagePolicy = field(default_factory=ImagePolicy)
    defaults: GenerationSettings = field(default_factory=GenerationSettings)


def create_app(engine: Engine, worker: GenerationWorker, settings: ApiSettings) -> FastAPI:
    """The FastAPI app; ``worker`` must wrap ``engine``."""
    app = FastAPI(title="Yi-VL OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(HostCheck, bind=settings.host, allowed=settings.allowed_hosts)  # outermost
    parsing = Slots(settings.max_parsing)
    decoding = threading.BoundedSemaphore(settings.max_decodes)
    app.state.pixel_cache = cache = PixelCache(settings.image_cache_size, settings.image_cache_bytes)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.model_name}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        check_key(request, settings.api_key)
        return Response(worker.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        check_key(request, settings.api_key)
        return {"object": "list", "data": [_model_card(settings)]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str, request: Request) -> dict:
        check_key(request, settings.api_key)
        if name != settings.model_name:
            raise model_not_found(name, settings.model_name)
        return _model_card(settings)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_key(request, settings.api_key)
        check_json(request)
        # announced to the worker so that an idle batch waits for a burst to be parsed, not just its first
        with parsing, worker.arriving() as arrival:  # at most max_parsing bodies in memory before the queue
            body = await _read_body(request, settings.max_request_bytes)
            # JSON parsing, image decoding, tokenizing run in a thread: they must not stall the event loop
            prepared = await run_in_threadpool(
                _parse_and_prepare, engine, settings, body, decoding, cache, worker.keeps_image_prefixes
            )
            del body
            events = _open_stream(worker, prepared, settings, arrival)
        if prepared.chat.stream:
            return StreamingResponse(
                sse_chunks(events, prepared, settings.model_name),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        generations = await _collect_unless_gone(request, events)
        if generations is None:  # nobody is left to read an answer
            return Response(status_code=499)
        return JSONResponse(completion_body(generations, prepared, settings.model_name))

    return app


def _model_card(settings: ApiSettings) -> dict:
    return {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "yivl"}


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or HTTP 413 as soon as it is known to exceed ``limit`` bytes (not read to the end)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _body_too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _body_too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _body_too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is {size}+ bytes; this server takes at most {limit} (api.max_request_bytes)",
        code="request_too_large",
    )


def _parse_and_prepare(
    engine: Engine,
    settings: ApiSettings,
    body: bytes,
    decoding: threading.BoundedSemaphore,
    cache: PixelCache,
    key_image: bool,
) -> Prepared:
    chat = parse_request(body, settings.unsupported_fields)
    return prepare(engine, settings, chat, decoding, cache, key_image)


def prepare(
    engine: Engine,
    settings: ApiSettings,
    chat: ChatRequest,
    decoding: threading.BoundedSemaphore | None = None,
    cache: PixelCache | None = None,
    key_image: bool = False,
) -> Prepared:
    """Check the model name, the conversation, the image and the prompt length; HTTP 4xx if any is wrong.

    The text is bounded before it is tokenized and the image fetched only then, decoded while holding
    ``decoding`` (at most ``max_decodes`` images in the decoder at once) unless ``cache`` has its pixels.
    With ``key_image`` (the worker keeps image prefixes) the pixels are hashed here, not on the worker's
    thread (the digest is remembered with the tensor).
    """
    if chat.model != settings.model_name:
        raise model_not_found(chat.model, settings.model_name)
    if chat.n > settings.max_n:
        raise invalid_value(f"n={chat.n}; this server answers at most {settings.max_n} choices", "n")
    conversation = to_conversation(chat.messages, settings.system_messages)
    check_text_fits(engine, conversation)
    ref = conversation.image
    image = None if ref is None else request_pixels(engine, ref, settings, decoding, cache)
    if image is not None and key_image:
        pixel_key(image)
    try:
        ids = engine.prompt_ids(conversation.turns, image is not None, conversation.system)
        gen = generation_settings(chat, settings.defaults)
    except YivlError as exc:
        raise bad_request(str(exc), code="invalid_request") from None
    prompt_tokens = engine.prompt_length(ids)
    if prompt_tokens >= engine.context_length:
        raise too_long(str(prompt_tokens), engine.context_length)
    requests = [EngineRequest(conversation.turns, image, conversation.system) for _ in range(chat.n)]
    return Prepared(chat, requests, gen, prompt_tokens, engine.token_piece)


def request_pixels(
    engine: Engine,
    ref: ImageRef,
    settings: ApiSettings,
    decoding: threading.BoundedSemaphore | None = None,
    cache: PixelCache | None = None,
) -> torch.Tensor:
    """The request's image as the model's pixels ``[3, S, S]`` (float32, CPU), made here on the request
    thread, not on the worker's: a queued request holds those, not a 64-megapixel image. An image seen
    before comes from ``cache`` (shared: nobody writes into it)."""
    return fetch_pixels(ref, settings.images, engine.preprocess, decoding, cache, engine.pixel_settings())


def generation_settings(chat: ChatRequest, defaults: GenerationSettings) -> GenerationSettings:
    """Request fields over the server defaults; the caller's stop strings are added to Yi-VL's ``###``;
    ``top_k`` -1 or 0 turns top-k filtering off."""

    def pick(value, default):
        return default if value is None else value

    chat.check()
    top_k = defaults.top_k if chat.top_k is None else (chat.top_k if chat.top_k > 0 else None)
    return GenerationSettings(
        temperature=pick(chat.temperature, defaults.temperature),
        top_p=pick(chat.top_p, defaults.top_p),
        top_k=top_k,
        max_new_tokens=pick(chat.max_completion_tokens, pick(chat.max_tokens, defaults.max_new_tokens)),
        stop=(STOP_STRING, *chat.stop_strings()),
        seed=pick(chat.seed, defaults.seed),
        frequency_penalty=pick(chat.frequency_penalty, defaults.frequency_penalty),
        presence_penalty=pick(chat.presence_penalty, defaults.presence_penalty),
        logprobs=chat.logprobs,
        top_logprobs=pick(chat.top_logprobs, 0),
    )


def _open_stream(
    worker: GenerationWorker, prepared: Prepared, settings: ApiSettings, arrival: Arrival | None = None
) -> AsyncEventStream:
    try:
        return AsyncEventStream(
            worker, prepared.requests, prepared.settings, settings.request_timeout_s, arrival
        )
    except WorkerBusy as exc:  # a place in the queue frees within about a second on a busy server
        raise server_busy(str(exc)) from None


async def _collect(events: AsyncEventStream) -> list[Generation]:
    """Wait for a non-streamed job's answers; its failure becomes the matching HTTP error."""
    async for event in events:
        if event.kind == "done":
            return event.generations
        if event.kind == "error":
            raise as_api_error(event.error)
    raise ApiError(500, "the generation ended without an answer")


async def _collect_unless_gone(request: Request, events: AsyncEventStream) -> list[Generation] | None:
    """:func:`_collect`, or None once the client hangs up: its job is cancelled at the next token, so an
    abandoned non-streamed request frees the worker at once instead of at ``request_timeout_s``."""
    answers = asyncio.ensure_future(_collect(events))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({answers, gone}, return_when=asyncio.FIRST_COMPLETED)
        if answers.done():
            return answers.result()
        log.info("the client went away before its answer; generation cancelled")
        return None
    finally:
        gone.cancel()
        if not answers.done():
            answers.cancel()
            events.job.cancel()


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(
            exc.status_code, "invalid_request" if exc.status_code < 500 else "internal_error"
        )
        return ApiError(exc.status_code, str(exc.detail), code=code, headers=exc.headers).response()

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return ApiError(500, f"internal error: {type(exc).__name__}", code="internal_error").response()
