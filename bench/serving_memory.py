"""Peak memory of the API server under a burst of big requests (issue: memory before the queue limit).

Builds the tiny random Yi-VL, starts ``python infer.py mode=api`` (default limits: api.max_queue=16,
api.max_decodes=2, api.max_request_bytes=30 MB, max_image_pixels=64 M) on 127.0.0.1 in a subprocess and
sends, from 20 threads at once: 29 MB text bodies (refused for their length before being tokenized),
then 64-megapixel GIFs (8000x8000, a few dozen KB each; at the pixel limit, so decoded and answered),
a different one from each thread (the server's image cache cannot help: the worst case), then one new
GIF from every thread (the cache answers the requests that start after its first decode ends; the
ones decoding at once before that each decode it). For each burst the table gives the server's
resident memory before, its peak during (VmHWM, reset before the burst) and after, and the HTTP
statuses. Linux only (/proc).

    python bench/serving_memory.py [--clients 20] [--markdown]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image
from tables import print_table

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0
TEXT_BYTES = 29_000_000
GIF_SIDE = 8000


def rss_mb(pid: int, field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"/proc/{pid}/status has no {field}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def text_body() -> bytes:
    words = "word " * (TEXT_BYTES // 5)
    return json.dumps(
        {"model": "yi-vl", "messages": [{"role": "user", "content": words}], "max_tokens": 4}
    ).encode()


def gif_body(colour: int = 3) -> bytes:
    """A request with one 64 MP single-colour GIF; another ``colour`` (palette index) makes other bytes,
    so the server's image cache cannot answer it from an earlier one."""
    buf = io.BytesIO()
    Image.new("P", (GIF_SIDE, GIF_SIDE), colour % 256).save(buf, format="GIF")
    url = "data:image/gif;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    payload = {"model": "yi-vl", "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    return json.dumps(payload).encode()


def burst(url: str, bodies: list[bytes]) -> tuple[Counter, float]:
    """One thread a body, all POSTing at once; their statuses and the wall time."""
    statuses: Counter = Counter()
    lock = threading.Lock()
    gate = threading.Barrier(len(bodies))

    def one(body: bytes) -> None:
        gate.wait()
        try:
            response = httpx.post(
                f"{url}/v1/chat/completions",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=600,
            )
            status = str(response.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=one, args=(body,)) for body in bodies]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    return statuses, time.perf_counter() - start


def start_server(model: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "infer.py"), "mode=api", f"model.path={model}", "device=cpu"]
    command += [f"api.port={port}", "api.log_level=warning", "api.api_key=null"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the API server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    from yivl.checkpoint.tiny import build_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_checkpoint(Path(tmp) / "tiny", seed=0)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = start_server(model, port)
        try:
            rows = measure(server.pid, f"http://127.0.0.1:{port}", args.clients)
        finally:
            server.terminate()
            server.wait(30)
    show(rows, args.markdown)


def measure(pid: int, url: str, clients: int) -> list[dict]:
    rows = []
    text, gif = text_body(), gif_body(2)  # a colour the first GIF burst does not send: not cached yet
    bursts = (
        ("29 MB text bodies", [text] * clients),
        ("64 MP GIFs, all different", [gif_body(3 + i) for i in range(clients)]),
        ("64 MP GIFs, all the same", [gif] * clients),
    )
    for name, bodies in bursts:
        httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "yi-vl", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            timeout=60,
        )
        before = rss_mb(pid, "VmRSS")
        reset_peak(pid)
        statuses, wall = burst(url, bodies)
        time.sleep(1.0)
        rows.append(
            {
                "burst": f"{clients} x {name} ({len(bodies[0]) / 1e6:.2f} MB each)",
                "before": before,
                "peak": rss_mb(pid, "VmHWM"),
                "after": rss_mb(pid, "VmRSS"),
                "statuses": ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items())),
                "wall": wall,
            }
        )
    return rows


def show(rows: list[dict], markdown: bool) -> None:
    head = ["burst", "RSS before (MB)", "peak RSS (MB)", "RSS after (MB)", "statuses", "wall (s)"]
    cells = [
        [
            r["burst"],
            f"{r['before']:.0f}",
            f"{r['peak']:.0f}",
            f"{r['after']:.0f}",
            r["statuses"],
            f"{r['wall']:.1f}",
        ]
        for r in rows
    ]
    title = f"API server memory under a burst (pid RSS; {os.cpu_count()} CPUs)"
    print_table(title, head, cells, markdown, markdown_title=False)


if __name__ == "__main__":
    main()
