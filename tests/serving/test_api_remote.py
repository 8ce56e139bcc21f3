"""Remote images: public addresses only (checked after DNS and on every redirect, connected to as checked),
one deadline for the whole download and a size cap. The servers here listen on 127.0.0.1, which a
default server refuses; the tests that download allow it with api.remote_allowed_networks."""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from yivl.serving import remote_fetch
from yivl.serving.api import create_app
from yivl.serving.api_errors import ApiError
from yivl.serving.engine import Engine
from yivl.serving.worker import GenerationWorker

from .conftest import MAX_IMAGE_BYTES, api_settings
from .helpers import answered_on_one_connection, image_message, png_bytes, serve
from .test_api_errors import body, check_error

PNG = png_bytes()


class Handler(http.server.BaseHTTPRequestHandler):
    """/image.png, /big.png, /drip.png (1 byte/s), /to/<url> (302 to url), /loop (302 to itself),
    /stall.png (most of the image at once, the last 10 bytes one per 0.3 s), /short.png (Content-Length 100
    bytes over what it sends)."""

    def do_GET(self) -> None:
        if self.path.startswith("/to/"):
            return self._redirect(self.path[len("/to/") :])
        if self.path == "/loop":
            return self._redirect("/loop")
        if self.path in ("/stall.png", "/short.png"):
            return self._partial(stall=self.path == "/stall.png")
        data = b"\0" * (MAX_IMAGE_BYTES + 1) if self.path == "/big.png" else PNG
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if self.path != "/drip.png":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.path == "/drip.png":
            return self._drip(data)
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _partial(self, stall: bool) -> None:
        """Stall: its Content-Length, all but the last 10 bytes, then those slowly (each read waits less
        than the deadline); short: the whole image, then the connection closes, 100 bytes before the
        Content-Length it announced."""
        if stall:  # keep-alive: the downloader's connection keeps its socket, which the watchdog shuts
            self.protocol_version = "HTTP/1.1"
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG) if stall else len(PNG) + 100))
        self.end_headers()
        self.wfile.write(PNG[:-10] if stall else PNG)
        self.wfile.flush()
        if stall:
            with contextlib.suppress(OSError):
                for byte in PNG[-10:]:
                    time.sleep(0.3)
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
        self.close_connection = True

    def _drip(self, data: bytes) -> None:
        try:
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:  # the downloader hung up, as it should
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def open_api(engine: Engine, worker: GenerationWorker) -> Iterator[str]:
    """Remote images on, 127.0.0.1 allowed (test-only), a 2 s download deadline."""
    with serve(create_app(engine, worker, api_settings(allow_remote=True, remote_timeout_s=2.0))) as url:
        yield url


def ask(url: str, image: str) -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        return answered_on_one_connection(client, url, body(messages=[image_message(image)]), body())


def test_a_default_server_refuses_loopback(engine: Engine, worker: GenerationWorker, images: str):
    with serve(create_app(engine, worker, api_settings(allow_remote=True, networks=()))) as url:
        for image in (f"{images}/image.png", images.replace("127.0.0.1", "localhost") + "/image.png"):
            error = check_error(ask(url, image), 400, "remote_address_refused", None)
            assert "a loopback, private, link-local or reserved address" in error["message"]


def test_an_allowed_network_downloads(open_api: str, images: str):
    assert ask(open_api, f"{images}/image.png").status_code == 200


@pytest.mark.parametrize(
    "target", ["http://10.1.2.3/x.png", "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x.png"]
)
def test_a_redirect_to_a_refused_address_is_refused(open_api: str, images: str, target: str):
    check_error(ask(open_api, f"{images}/to/{target}"), 400, "remote_address_refused", None)


def test_redirects_are_bounded(open_api: str, images: str):
    error = check_error(ask(open_api, f"{images}/loop"), 400, "invalid_image_url", None)
    assert "more than 5 redirects (api.remote_max_redirects)" in error["message"]


def test_a_slow_drip_hits_the_total_deadline(open_api: str, images: str):
    start = time.monotonic()
    error = check_error(ask(open_api, f"{images}/drip.png"), 400, "invalid_image_url", None)
    assert time.monotonic() - start < 4.5  # 2 s deadline; a per-read timeout would wait 60+ s
    assert "no complete answer within api.remote_timeout_s" in error["message"]


def test_a_download_cut_off_by_the_deadline_is_not_taken_as_complete(open_api: str, images: str):
    policy = api_settings(allow_remote=True, remote_timeout_s=1.0).images
    with pytest.raises(ApiError) as info:
        remote_fetch.download(f"{images}/stall.png", "image", policy)
    assert info.value.code == "invalid_image_url"
    assert "no complete answer within api.remote_timeout_s" in info.value.message
    error = check_error(ask(open_api, f"{images}/stall.png"), 400, "invalid_image_url", None)
    assert "no complete answer within api.remote_timeout_s" in error["message"]


def test_a_body_shorter_than_its_content_length_is_refused(open_api: str, images: str):
    error = check_error(
        ask(open_api, f"{images}/short.png"), 400, "invalid_image_url", "messages[0].content[1].image_url"
    )
    n = len(PNG)
    assert (
        f"could not download the image: the download ended early ({n} of {n + 100} bytes)"
        in (error["message"])
    )


def test_a_big_download_is_413(open_api: str, images: str):
    check_error(ask(open_api, f"{images}/big.png"), 413, "image_too_large", None)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.100.100.200", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00:ec2::254", True),
        ("::ffff:127.0.0.1", True),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_address_rules(address: str, refused: bool):
    assert remote_fetch.refused(ipaddress.ip_address(address), []) is refused


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch, images: str):
    """DNS rebinding: the name answers 127.0.0.1 (allowed here) once, then a refused address; the download
    resolves once and connects to what it checked."""
    port = int(images.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1", "10.9.9.9", "10.9.9.9"])
    real: Callable = socket.getaddrinfo

    def rebinding(host: str, *args: object, **kwargs: object) -> list:
        if host != "images.test":
            return real(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    policy = api_settings(allow_remote=True).images
    assert remote_fetch.download(f"http://images.test:{port}/image.png", "image", policy) == PNG
    assert next(answers) == "10.9.9.9"  # only the first answer was used


@pytest.fixture(scope="module")
def tls_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """An HTTPS image server on 127.0.0.1 with a self-signed certificate for images.test; yields its
    port and the certificate file."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"]
    subprocess.run(
        [*command, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port, str(cert)
    server.shutdown()


@pytest.mark.parametrize(("name", "works"), [("images.test", True), ("other.test", False)])
def test_https_checks_the_certificate_against_the_url_name(
    monkeypatch: pytest.MonkeyPatch, tls_images: tuple[int, str], name: str, works: bool
):
    port, cert = tls_images
    real_getaddrinfo, real_context = socket.getaddrinfo, ssl.create_default_context

    def local(host: str, *args: object, **kwargs: object) -> list:
        if host.endswith(".test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local)
    monkeypatch.setattr(ssl, "create_default_context", lambda: real_context(cafile=cert))
    policy = api_settings(allow_remote=True).images
    url = f"https://{name}:{port}/image.png"
    if works:
        assert remote_fetch.download(url, "image", policy) == PNG
        return
    with pytest.raises(ApiError) as info:
        remote_fetch.download(url, "image", policy)
    assert info.value.code == "invalid_image_url" and "certificate verify failed" in info.value.message
