"""Aggregate tokens/s and time to first token of the OpenAI-compatible API (continuous batching)
against the same requests run one at a time by the engine in-process.

Builds the tiny random Yi-VL, starts ``python infer.py mode=api`` on 127.0.0.1 (a free port) in a
subprocess, and streams the same greedy question about an image. ``direct`` is the engine's generation
called in this process, one request at a time (several clients: threads taking turns first come, first
served): the same requests with no batching and no server. ``http`` is the server through a bare httpx
client that reads the event stream line by line; ``openai`` (one client only) the official client. One
client: the three paths interleaved request by request (so a drift in machine load hits every path
alike), per-request overhead against ``direct``. 4 and 8 clients: ``direct`` and ``http`` in
alternating rounds, total tokens over wall time, TTFT p50/p95; each round also sends one client's
requests over ``http`` (twice ``--per-client``), the reference of the several-client TTFT ratio.
Targets on CPU: >= 3x aggregate tokens/s at 8 clients, TTFT p50 at 8 clients <= 3x the one-client
TTFT, overhead <= 10% at one client.

Every request asks about the same image by default, as a chat's turns do (the server's decoded-image
and image-prefix caches serve all but the first); ``--images N`` cycles through N different generated
images instead (``--images 1000``: every request a new image, nothing served from a cache).

    python bench/serving_latency.py [--tokens 64] [--requests 10] [--rounds 3] [--clients 4 8]
                                    [--images 1] [--markdown]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import openai
import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from yivl.checkpoint.tiny import build_tiny_checkpoint
from yivl.data.chat import Turn
from yivl.models.generation import GenerationSettings
from yivl.serving.engine import Engine, Request

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "assets" / "shapes.png"
QUESTION = "What shapes are in the picture, and what colours are they?"
START_TIMEOUT_S = 180.0


@dataclass
class Sample:
    """One request: seconds to the first streamed text, seconds in all, and answer tokens."""

    ttft: float
    total: float
    tokens: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens per answer (greedy)")
    parser.add_argument("--requests", type=int, default=10, help="one client: requests per path")
    parser.add_argument("--per-client", type=int, default=2, help="several clients: requests per client")
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 8], help="concurrent client counts")
    parser.add_argument("--rounds", type=int, default=3, help="several clients: alternating rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads here and in the server (1: steadier on a busy machine)",
    )
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an infer.py override for the server, e.g. --server api.batch_wait_s=0 (repeatable)",
    )
    parser.add_argument(
        "--images", type=int, default=1, help="distinct images the requests cycle through (1: the same one)"
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser.parse_args(argv)


class FifoLock:
    """A lock granted in arrival order (``threading.Lock`` lets the releasing thread barge back in, which
    would flatter the in-process baseline's time to first token against the server's FIFO queue)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class Images:
    """The PNG bytes each request sends: ``assets/shapes.png`` (``count`` 1), or the next of ``count``
    different generated pictures, in turn across all clients."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._next = 0
        self._lock = threading.Lock()
        self._same = IMAGE.read_bytes()

    def next(self) -> bytes:
        if self.count <= 1:
            return self._same
        with self._lock:
            index = self._next % self.count
            self._next += 1
        return picture(index)


def picture(index: int) -> bytes:
    """A 448 px PNG of two rectangles whose colours and places follow from ``index`` (all different)."""
    image = Image.new("RGB", (448, 448), ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256))
    draw = ImageDraw.Draw(image)
    x, y = (index * 29) % 300, (index // 300 * 41) % 300
    draw.rectangle((x, y, x + 120, y + 90), fill=(255 - (index * 17) % 256, 40, 200))
    draw.rectangle((y, x, y + 60, x + 140), fill=(20, (index * 13) % 256, 90))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def direct_once(engine: Engine, tokens: int, lock: FifoLock, images: Images) -> Sample:
    """The engine in-process, streaming into a callback (what the API wraps)."""
    first: list[float] = []
    settings = GenerationSettings(temperature=0, max_new_tokens=tokens)
    image = images.next()
    start = time.perf_counter()
    with lock:
        answer = engine.generate_full(
            [Request([Turn("human", QUESTION)], image)],
            settings,
            on_text=lambda _i, _d: first or first.append(time.perf_counter()),
        )[0]
    end = time.perf_counter()
    # generated tokens, as the API's usage.completion_tokens counts them
    return Sample((first[0] if first else end) - start, end - start, answer.num_tokens)


def messages(image: bytes) -> list[dict]:
    """The question with the image as a data URL."""
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": content}]


def http_once(client: httpx.Client, url: str, tokens: int, images: Images) -> Sample:
    """One streamed request read line by line: only the server's own cost is added to the engine's."""
    body = {
        "model": "yi-vl",
        "messages": messages(images.next()),  # built before the clock starts, as for the openai client
        "temperature": 0,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first, last = None, ""
    with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            if first is None and '"content": "' in line and '"content": ""' not in line:
                first = time.perf_counter()
            last = line
    end = time.perf_counter()
    used = json.loads(last[len("data: ") :])["usage"]["completion_tokens"]
    return Sample((first or end) - start, end - start, used)


def api_once(client: openai.OpenAI, tokens: int, images: Images) -> Sample:
    """One streamed request through the OpenAI client."""
    chat = messages(images.next())
    start = time.perf_counter()
    first = None
    used = 0
    stream = client.chat.completions.create(
        model="yi-vl",
        messages=chat,
        temperature=0,
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    end = time.perf_counter()
    return Sample((first or end) - start, end - start, used)


def run_clients(once: Callable[[], Sample], clients: int, requests: int) -> tuple[list[Sample], float]:
    """``clients`` threads, each sending ``requests`` one after another; all samples and the wall time."""
    samples: list[Sample] = []
    guard = threading.Lock()

    def client() -> None:
        for _ in range(requests):
            sample = once()
            with guard:
                samples.append(sample)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return samples, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, threads: int, overrides: list[str]) -> subprocess.Popen:
    """``infer.py mode=api`` (plus ``overrides``) on 127.0.0.1:port; returns once ``/health`` answers."""
    command = [sys.executable, str(ROOT / "infer.py"), "mode=api", f"model.path={model}", "device=cpu"]
    command += [f"api.port={port}", "api.host=127.0.0.1", "api.log_level=warning", "api.api_key=null"]
    command += overrides
    server = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": str(threads)}
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the API server exited with status {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("the API server did not start in time")


def run_interleaved(paths: dict[str, Callable[[], Sample]], requests: int) -> dict[str, list[Sample]]:
    """One client: each path in turn, request by request, so a drift in machine load hits all alike."""
    samples: dict[str, list[Sample]] = {name: [] for name in paths}
    for _ in range(requests):
        for name, once in paths.items():
            samples[name].append(once())
    return samples


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def summarize(name: str, clients: int, samples: list[Sample], wall: float) -> dict:
    """One path at one client count: TTFT p50/p95, median latency, and all tokens over ``wall``."""
    ttft = [s.ttft for s in samples]
    return {
        "path": name,
        "clients": clients,
        "requests": len(samples),
        "tokens": statistics.median(s.tokens for s in samples),
        "ttft_p50": 1000 * percentile(ttft, 0.5),
        "ttft_p95": 1000 * percentile(ttft, 0.95),
        "latency_ms": 1000 * statistics.median(s.total for s in samples),
        "tok_s": sum(s.tokens for s in samples) / wall,
    }


def measure(engine: Engine, url: str, args: argparse.Namespace) -> list[dict]:
    """One client: the paths interleaved request by request. Several clients: ``direct`` and ``http``
    take turns in rounds. Either way drifting machine load hits every path alike."""
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=300)
    # enough pooled connections that no client waits for one
    http = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=max(args.clients) + 1))
    images = Images(args.images)  # one sequence for all paths: with many images, none is sent twice
    paths = {
        "direct": partial(direct_once, engine, args.tokens, FifoLock(), images),
        "http": partial(http_once, http, url, args.tokens, images),
        "openai": partial(api_once, client, args.tokens, images),
    }
    run_interleaved(paths, 2)  # warm-up
    singles = run_interleaved(paths, args.requests)
    rows = [summarize(name, 1, singles[name], sum(s.total for s in singles[name])) for name in paths]
    for clients in args.clients:
        runs: dict[str, tuple[list[Sample], float]] = {name: ([], 0.0) for name in ("direct", "http")}
        alone: list[Sample] = []  # one http client, in the same rounds: the TTFT ratio's own reference
        for _ in range(args.rounds):
            for name in runs:
                samples, wall = run_clients(paths[name], clients, args.per_client)
                runs[name] = (runs[name][0] + samples, runs[name][1] + wall)
            alone += [paths["http"]() for _ in range(args.per_client * 2)]
        rows += [summarize(name, clients, *runs[name]) for name in runs]
        rows[-1]["ttft_alone"] = 1000 * percentile([s.ttft for s in alone], 0.5)
    http.close()
    return rows


def print_table(rows: list[dict], markdown: bool) -> None:
    """One row per path and client count; ``vs direct``: tok/s against the same requests one at a
    time; ``TTFT vs 1``: TTFT p50 against the same path with one client (for ``http`` with several
    clients: against one client's requests sent in the same rounds, so that a change of machine load
    between the one-client and the several-client phases does not move the ratio)."""
    headers = ["path", "clients", "requests", "tokens", "TTFT p50 ms", "TTFT p95 ms", "latency ms"]
    headers += ["tok/s", "vs direct", "TTFT vs 1"]
    direct = {r["clients"]: r for r in rows if r["path"] == "direct"}
    alone = {r["path"]: r for r in rows if r["clients"] == 1}
    cells = []
    for row in rows:
        fmt = [row["path"], str(row["clients"]), str(row["requests"]), f"{row['tokens']:.0f}"]
        fmt += [f"{row[k]:.1f}" for k in ("ttft_p50", "ttft_p95", "latency_ms", "tok_s")]
        fmt.append(f"{row['tok_s'] / direct[row['clients']]['tok_s']:.2f}x")
        reference = row.get("ttft_alone", alone[row["path"]]["ttft_p50"])
        fmt.append(f"{row['ttft_p50'] / reference:.2f}x")
        cells.append(fmt)
    if markdown:
        print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
        for c in cells:
            print("| " + " | ".join(c) + " |")
        return
    table = Table(title="Serving, tiny model, CPU: the API (batched) vs the engine one request at a time")
    for h in headers:
        table.add_column(h, justify="right")
    for c in cells:
        table.add_row(*c)
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_checkpoint(Path(tmp) / "tiny-yi-vl")
        engine = Engine.from_path(model, device="cpu", dtype="float32")
        port = free_port()
        server = start_server(model, port, args.threads, args.server)
        try:
            rows = measure(engine, f"http://127.0.0.1:{port}/v1", args)
        finally:
            server.terminate()
            server.wait(30)
    print(
        f"{torch.get_num_threads()} torch threads; {args.tokens} greedy tokens per answer; "
        + (f"image {IMAGE.name}" if args.images <= 1 else f"{args.images} different 448 px images in turn")
    )
    print_table(rows, args.markdown)
    for row in rows:
        if "ttft_alone" in row:
            clients, ttft = row["clients"], row["ttft_alone"]
            print(f"one http client in the rounds of {clients} clients: TTFT p50 {ttft:.1f} ms")


if __name__ == "__main__":
    main()
