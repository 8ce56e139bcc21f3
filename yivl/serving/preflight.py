"""Checks that run before the model loads (minutes for 34B): the servers' packages, ports and paths.

Each problem is one line naming the override that fixes it, e.g. ``web.port=8111 on 127.0.0.1 is already
in use (another server?); stop it or pick a free port, e.g. web.port=8112``.
"""

from __future__ import annotations

import errno
import importlib.util
import socket
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from yivl.errors import YivlError
from yivl.serving.chat_input import history_path

SERVER_PACKAGES = {"web": ("gradio",), "api": ("fastapi", "uvicorn")}
PORTS_TO_SUGGEST = 50


def preflight(cfg: DictConfig) -> None:
    """YivlError on the first problem ``cfg.mode`` would meet only after the model has loaded."""
    mode = str(cfg.mode)
    if mode in SERVER_PACKAGES:
        require(mode, *SERVER_PACKAGES[mode])
        section = cfg[mode]
        check_port(mode, str(section.host), int(section.port))
    if mode == "web":
        check_writable_temp()
    if mode in ("single", "chat") and cfg.image is not None:
        check_image_path(str(cfg.image))
    if mode == "chat":
        history_path(cfg.chat.history_file)


def require(mode: str, *modules: str) -> None:
    """YivlError naming the install command when a server dependency is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise YivlError(
            f"mode={mode} needs {', '.join(missing)}; install them with pip install 'yivl[serve]'"
        )


def check_port(section: str, host: str, port: int) -> None:
    """Bind ``host:port`` as the server will (and let go at once); YivlError saying what to change."""
    try:
        _bind(host, port)
    except socket.gaierror:
        raise YivlError(
            f"{section}.host={host} is not a host name or address this machine knows; use "
            f"{section}.host=127.0.0.1 (this machine only) or {section}.host=0.0.0.0 (every interface)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise YivlError(
                f"{section}.port={port} on {host} is already in use (another server?); stop it or pick a "
                f"free port, e.g. {section}.port={free_port_near(host, port)}"
            ) from None
        if exc.errno == errno.EACCES:
            raise YivlError(
                f"{section}.port={port} on {host} needs administrator rights; use a port above 1023, e.g. "
                f"{section}.port={free_port_near(host, max(port, 8000))}"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise YivlError(
                f"{section}.host={host} is not an address of this machine; use {section}.host=127.0.0.1 "
                f"(this machine only) or {section}.host=0.0.0.0 (every interface)"
            ) from None
        raise YivlError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; change {section}.host or {section}.port"
        ) from None


def _bind(host: str, port: int) -> None:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is free
        sock.bind(address)


def free_port_near(host: str, port: int) -> int:
    """The first port after ``port`` that binds on ``host`` (to suggest one), else ``port + 1``."""
    for candidate in range(port + 1, min(port + 1 + PORTS_TO_SUGGEST, 65536)):
        try:
            _bind(host, candidate)
        except OSError:
            continue
        return candidate
    return port + 1


def check_writable_temp() -> None:
    """gradio keeps uploads and the example images in the temporary folder: it must be writable."""
    folder = Path(tempfile.gettempdir())
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise YivlError(
            f"the temporary folder {folder} is not writable ({exc.strerror or exc}); set TMPDIR=DIR to a "
            "writable folder"
        ) from None


def check_image_path(image: str) -> None:
    """``image=`` must name a file (its content is checked when it is read)."""
    path = Path(image).expanduser()
    if not path.exists():
        raise YivlError(f"image not found: {image}; give image=PATH to an image file (or leave it out)")
    if not path.is_file():
        raise YivlError(f"image={image} is not a file; give image=PATH to an image file")
