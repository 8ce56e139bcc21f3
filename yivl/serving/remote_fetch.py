"""Download a remote image without letting a request reach what only the server can reach (SSRF).

Every hop (the URL, then each redirect, followed here, at most ``remote_max_redirects``) is resolved
once; if any address it resolves to is loopback, private, link-local (cloud metadata at
169.254.169.254 included), multicast, reserved or otherwise not global, the download is refused. The
connection goes to the very address that was checked (the ``Host`` header and TLS name stay the URL's),
so a DNS answer that changes between the check and the connect (DNS rebinding) changes nothing.
``remote_timeout_s`` is one deadline for the whole download, redirects included: a watchdog closes the
socket when it passes, however slowly the other side drips bytes, and a download it cuts off is an
error, never a short image. At most ``max_image_bytes`` are read; a body shorter than its
``Content-Length`` is refused.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from urllib.parse import SplitResult, urljoin, urlsplit

from yivl.serving.api_errors import ApiError, bad_request
from yivl.serving.image_policy import ImagePolicy

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECTS = {301, 302, 303, 307, 308}
CHUNK = 1 << 16


class _Refused(Exception):
    """A hop whose address this server does not fetch from."""


def download(url: str, param: str, policy: ImagePolicy) -> bytes:
    """The body behind ``url`` (http or https), following redirects; HTTP 4xx naming ``param`` otherwise."""
    deadline = time.monotonic() + policy.remote_timeout_s
    allowed = networks(policy.remote_allowed_networks)
    try:
        for _ in range(policy.remote_max_redirects + 1):
            body, location = _hop(url, deadline, allowed, policy.max_image_bytes, param)
            if location is None:
                return body
            url = urljoin(url, location)
        raise OSError(f"more than {policy.remote_max_redirects} redirects (api.remote_max_redirects)")
    except _Refused as exc:
        raise bad_request(f"{param}: {exc}", param=param, code="remote_address_refused") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        late = isinstance(exc, TimeoutError) or time.monotonic() >= deadline
        reason = "no complete answer within api.remote_timeout_s" if late else exc
        raise bad_request(
            f"{param}: could not download the image: {reason}", param=param, code="invalid_image_url"
        ) from None


def networks(specs: Sequence[str]) -> list[IpNetwork]:
    """``["127.0.0.1/32", "10.0.0.0/8"]`` -> networks a download may reach though they are not global."""
    return [ipaddress.ip_network(spec, strict=False) for spec in specs]


def refused(address: IpAddress, allowed: Sequence[IpNetwork]) -> bool:
    """Whether a download must not connect to ``address`` (IPv4-mapped IPv6 is judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == net.version and address in net for net in allowed):
        return False
    return not address.is_global or address.is_multicast or address.is_reserved


def _resolve(host: str, port: int, allowed: Sequence[IpNetwork]) -> IpAddress:
    """The first address of ``host``, after checking every address it resolves to."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if refused(address, allowed):
            raise _Refused(
                f"{host} resolves to {address}, a loopback, private, link-local or reserved address; this "
                "server downloads only from public addresses (see api.remote_allowed_networks)"
            )
    if not addresses:
        raise OSError(f"{host} has no address")
    return addresses[0]


def _hop(
    url: str, deadline: float, allowed: Sequence[IpNetwork], limit: int, param: str
) -> tuple[bytes, str | None]:
    """One request: ``(body, None)``, or ``(b"", location)`` for a redirect."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"cannot follow {url[:100]!r}: only http and https URLs are fetched")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _resolve(parts.hostname, port, allowed)
    conn = _connection(parts.scheme, parts.hostname, port, address, deadline)
    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), conn.abort)
    watchdog.start()
    try:
        target = parts.path or "/"
        conn.request("GET", f"{target}?{parts.query}" if parts.query else target, headers=_headers(parts))
        response = conn.getresponse()
        if response.status in REDIRECTS and response.getheader("location"):
            return b"", response.getheader("location")
        if response.status != 200:
            raise OSError(f"the image server answered HTTP {response.status}")
        return _read(response, limit, conn.expired, param), None
    except (OSError, http.client.HTTPException) as exc:
        if conn.expired.is_set() and not isinstance(exc, TimeoutError):
            raise TimeoutError("deadline passed") from None  # what the watchdog's shutdown broke
        raise
    finally:
        watchdog.cancel()
        conn.close()


def _headers(parts: SplitResult) -> dict[str, str]:
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return {"Host": host, "User-Agent": "yivl", "Accept": "image/*"}


def _read(response: http.client.HTTPResponse, limit: int, expired: threading.Event, param: str) -> bytes:
    """The body, at most ``limit`` bytes; OSError when it ends before its ``Content-Length``,
    TimeoutError once ``expired`` (the watchdog's shutdown makes ``read1`` return ``b""``, as at the
    end of a body, so an empty read is not taken for the end without checking)."""
    declared = response.getheader("content-length", "")
    expected = int(declared) if declared.isdigit() else None
    if expected is not None and expected > limit:
        raise _too_large(param, expected, limit)
    chunks, size = [], 0
    while chunk := response.read1(CHUNK):
        if expired.is_set():
            raise TimeoutError("deadline passed")
        size += len(chunk)
        if size > limit:
            raise _too_large(param, size, limit)
        chunks.append(chunk)
    if expired.is_set():
        raise TimeoutError("deadline passed")
    if expected is not None and size < expected:
        raise OSError(f"the download ended early ({size} of {expected} bytes)")
    return b"".join(chunks)


def _too_large(param: str, size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"{param}: the image is {size}+ bytes; this server takes at most {limit}",
        param=param,
        code="image_too_large",
    )


def _connection(scheme: str, host: str, port: int, address: IpAddress, deadline: float) -> _PinnedHTTP:
    timeout = max(0.01, deadline - time.monotonic())
    if scheme == "https":
        return _PinnedHTTPS(host, port, timeout=timeout, address=str(address))
    return _PinnedHTTP(host, port, timeout=timeout, address=str(address))


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to ``address`` (the checked one), whatever ``host`` resolves to now."""

    def __init__(self, host: str, port: int, *, timeout: float, address: str) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.expired = threading.Event()
        # kept here: a response without Content-Length takes the socket over and close() drops self.sock
        self.live: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.live = socket.create_connection((self.address, self.port), self.timeout)
        if self.expired.is_set():
            raise TimeoutError("deadline passed")

    def abort(self) -> None:
        """Watchdog: mark the deadline passed and end the socket, so any blocked read or write returns
        at once."""
        self.expired.set()
        if self.live is not None:
            with contextlib.suppress(OSError):
                self.live.shutdown(socket.SHUT_RDWR)


class _PinnedHTTPS(_PinnedHTTP):
    """HTTPS to the checked address; the certificate is verified against the URL's host name."""

    default_port = 443

    def connect(self) -> None:
        super().connect()
        self.sock = self.live = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)
