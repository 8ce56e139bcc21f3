"""``infer.py mode=web`` and ``mode=api``: configuration -> a running server (gradio, FastAPI optional)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from yivl.config.schema import check
from yivl.config.schemas import INFER
from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.models.image_prefix import ImagePrefixCache
from yivl.serving.engine import Engine
from yivl.serving.memory import return_big_blocks_to_the_os
from yivl.serving.preflight import check_port, require
from yivl.serving.worker import GenerationWorker

if TYPE_CHECKING:
    from yivl.serving.api import ApiSettings

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_web(cfg: DictConfig, engine: Engine, settings: GenerationSettings) -> None:
    """Serve the gradio demo on ``web.host:web.port`` until interrupted."""
    require("web", "gradio")
    from yivl.serving.web import WebSettings, build_demo, launch

    web = cfg.web
    check(cfg, INFER, section="web")
    if not is_loopback(web.host):
        log.warning("web.host=%s: the demo is reachable from other machines, without a password", web.host)
    demo_settings = WebSettings(
        temperature=float(web.temperature),
        top_p=float(web.top_p),
        max_new_tokens=int(web.max_new_tokens),
        max_new_tokens_limit=int(web.max_new_tokens_limit),
        max_upload_bytes=int(web.max_upload_bytes),
        max_pixels=int(cfg.max_image_pixels),
        queue_size=int(web.queue_size),
        request_timeout_s=float(web.request_timeout_s),
        render_markdown=bool(web.render_markdown),
        concurrent_answers=int(web.max_batch_size),
    )
    worker = GenerationWorker(
        engine,
        int(web.queue_size),
        float(web.stream_interval_s),
        int(web.max_batch_size),
        max_prefill_rows=int(web.max_prefill_rows),
        image_prefixes=ImagePrefixCache(int(web.prefix_cache_images), int(web.prefix_cache_bytes)),
    )
    demo = build_demo(worker, demo_settings)
    print(f"Yi-VL web demo on http://{web.host}:{web.port} (Ctrl-C to stop)", flush=True)
    try:
        launch(
            demo,
            web.host,
            int(web.port),
            bool(web.share),
            int(web.max_upload_bytes),
            inbrowser=bool(web.inbrowser),
        )
    except OSError:
        check_port("web", str(web.host), int(web.port))  # taken while the model loaded: say so in one line
        raise


def run_api(cfg: DictConfig, engine: Engine, settings: GenerationSettings) -> None:
    """Serve the OpenAI-compatible API on ``api.host:api.port`` until interrupted."""
    require("api", "fastapi", "uvicorn")
    import uvicorn

    from yivl.serving.api import create_app

    api = cfg.api
    if not is_loopback(api.host) and not api.api_key:
        log.warning(
            "api.host=%s without api.api_key: anyone who can reach the port can use the model", api.host
        )
    app_settings = api_settings(cfg, settings)
    return_big_blocks_to_the_os()
    worker = GenerationWorker(
        engine,
        int(api.max_queue),
        float(api.stream_interval_s),
        int(api.max_batch_size),
        float(api.batch_wait_s),
        int(api.max_prefill_rows),
        ImagePrefixCache(int(api.prefix_cache_images), int(api.prefix_cache_bytes)),
    )
    app = create_app(engine, worker, app_settings)
    print(
        f"Yi-VL OpenAI-compatible API on http://{api.host}:{api.port}/v1 as model '{api.model_name}'",
        flush=True,
    )
    uvicorn.run(app, host=api.host, port=int(api.port), log_level=str(api.log_level))


def api_settings(cfg: DictConfig, defaults: GenerationSettings) -> ApiSettings:
    """``cfg.api`` (plus ``cfg.max_image_pixels``) -> :class:`yivl.serving.api.ApiSettings`."""
    from yivl.serving.api import ApiSettings  # FastAPI is imported only for mode=api
    from yivl.serving.image_urls import ImagePolicy
    from yivl.serving.local_media import resolve_roots
    from yivl.serving.remote_fetch import networks

    api = cfg.api
    check(cfg, INFER, section="api")
    try:
        networks(api.remote_allowed_networks)
    except ValueError as exc:
        raise YivlError(
            f"api.remote_allowed_networks: {exc}; give CIDR blocks such as [10.0.0.0/8]"
        ) from None
    policy = ImagePolicy(
        max_image_bytes=int(api.max_image_bytes),
        max_pixels=int(cfg.max_image_pixels),
        allowed_local_media_path=resolve_roots(_directories(api.allowed_local_media_path)),
        allow_remote=bool(api.allow_remote_images),
        remote_timeout_s=float(api.remote_timeout_s),
        remote_max_redirects=int(api.remote_max_redirects),
        remote_allowed_networks=tuple(api.remote_allowed_networks),
    )
    return ApiSettings(
        model_name=str(api.model_name),
        api_key=str(api.api_key) if api.api_key else None,
        host=str(api.host),
        allowed_hosts=tuple(api.allowed_hosts),
        cors_origins=tuple(api.cors_origins),
        max_request_bytes=int(api.max_request_bytes),
        max_parsing=int(api.max_queue),
        max_decodes=int(api.max_decodes),
        image_cache_size=int(api.image_cache_size),
        image_cache_bytes=int(api.image_cache_bytes),
        max_n=int(api.max_n),
        request_timeout_s=float(api.request_timeout_s),
        system_messages=api.system_messages,
        unsupported_fields=api.unsupported_fields,
        images=policy,
        defaults=defaults,
    )


def _directories(paths: list[str]) -> list[str]:
    """``api.allowed_local_media_path`` entries, each an existing directory (else a one-line error)."""
    for path in paths:
        if not Path(path).expanduser().is_dir():
            raise YivlError(
                f"api.allowed_local_media_path: {path} is not a directory; name existing image folders"
            )
    return list(paths)
