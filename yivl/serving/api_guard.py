"""What every API request passes before it is read: the Host header, CORS, the content type, the key,
and a bounded number of requests being read and parsed at once.

Why each: a web page the user visits can send requests to a keyless server on 127.0.0.1. A "simple"
cross-origin POST (``text/plain``, no preflight) is refused by the JSON-only rule (HTTP 415); a
JSON POST needs a CORS preflight, which gets no CORS headers unless ``api.cors_origins`` names the
page's origin; and a page that rebinds its own domain name to 127.0.0.1 (DNS rebinding) sends its own
name as ``Host``, which is refused (HTTP 400) unless ``api.allowed_hosts`` lists it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from fastapi import Request

from yivl.serving.api_errors import ApiError, server_busy

Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Callable, Callable], Awaitable[None]]
LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
ANY_HOST = "*"


def host_name(header: str) -> str:
    """``Host`` header -> the name or address in it: port, IPv6 brackets and a trailing dot removed."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, sep, port = header.rpartition(":")
    name = name if sep and port.isdigit() else header
    return name.rstrip(".")


def host_allowed(header: str | None, bind: str, allowed: Sequence[str]) -> bool:
    """Whether a request with this ``Host`` header is meant for a server bound to ``bind``.

    Accepted: the bind address, loopback addresses and ``localhost``, any IP address when bound to
    every interface (an address in ``Host`` cannot be rebound), and each name in ``allowed``
    (``*``: every name). A request without one (HTTP/1.0 allows that) is refused unless ``*`` turns the
    check off: the check must not hang on a header the sender can leave out.
    """
    if ANY_HOST in allowed:
        return True
    if header is None:
        return False
    name = host_name(header)
    if name in LOOPBACK_NAMES or name == bind.lower() or name in {a.lower().rstrip(".") for a in allowed}:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or bind in WILDCARD_BINDS


class HostCheck:
    """ASGI middleware: HTTP 400 ``invalid_host`` for a ``Host`` header :func:`host_allowed` refuses."""

    def __init__(self, app: Asgi, bind: str, allowed: Sequence[str]) -> None:
        self.app = app
        self.bind = bind
        self.allowed = tuple(allowed)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
            if not host_allowed(header, self.bind, self.allowed):
                reason = (
                    "the request has no Host header; send one naming this server (or start it with "
                    "api.allowed_hosts=[*] to turn the Host check off)"
                    if header is None
                    else f"the Host header '{header[:100]}' does not name this server; if clients reach "
                    "it by that name, add it to api.allowed_hosts"
                )
                error = ApiError(400, reason, code="invalid_host")
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def check_json(request: Request) -> None:
    """HTTP 415 unless the body is declared ``application/json`` (any charset parameter), once: with two
    ``Content-Type`` headers, what the body is depends on which one a reader believes."""
    types = request.headers.getlist("content-type")
    if len(types) > 1:
        raise ApiError(
            415,
            f"the request has {len(types)} Content-Type headers; send one: Content-Type: application/json",
            code="unsupported_media_type",
        )
    declared = types[0] if types else ""
    if declared.partition(";")[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            f"the request body must be JSON, sent with Content-Type: application/json (got "
            f"'{declared[:100] or 'none'}')",
            code="unsupported_media_type",
        )


def check_key(request: Request, api_key: str | None) -> None:
    """HTTP 401 unless ``Authorization: Bearer KEY`` matches ``api_key`` (when one is configured).

    The header's raw bytes are compared, in constant time, with the key's UTF-8 bytes: a non-ASCII key
    matches what clients send (headers are bytes; decoding them as Latin-1 and re-encoding as UTF-8
    never would).
    """
    if not api_key:
        return
    raw = next((v for k, v in request.headers.raw if k == b"authorization"), b"")
    scheme, _, given = raw.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), api_key.encode("utf-8")):
        raise ApiError(
            401, "missing or wrong API key; send Authorization: Bearer <key>", code="invalid_api_key"
        )


class Slots:
    """At most ``size`` requests being read, parsed and decoded at once; the next one gets HTTP 503.

    Used from the event loop only, so a plain counter is enough.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def __enter__(self) -> Slots:
        if self.taken >= self.size:
            raise server_busy(
                f"{self.size} requests are already being read; try again in a moment (api.max_queue)"
            )
        self.taken += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.taken -= 1
