"""Time to first token and tokens/s of the OpenAI-compatible API against the engine called in-process.

Builds the tiny random Yi-VL, starts ``python infer.py mode=api`` on 127.0.0.1 (a free port) in a
subprocess, and streams the same greedy question about an image through the ``openai`` client, with
one client and with four at once. The baseline is the engine's generation called in this process
(four clients: four threads sharing one lock, as the server's single worker does). Overhead target:
<= 10%.

    python bench/serving_latency.py [--tokens 64] [--requests 6] [--markdown]
"""

from __future__ import annotations

import argparse
import base64
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
    parser.add_argument("--requests", type=int, default=6, help="requests per client")
    parser.add_argument("--clients", type=int, default=4, help="clients in the concurrent runs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads here and in the server (1: steadier on a busy machine)",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser.parse_args(argv)


def direct_once(engine: Engine, tokens: int, lock: threading.Lock) -> Sample:
    """The engine in-process, streaming into a callback (what the API wraps)."""
    first: list[float] = []
    settings = GenerationSettings(temperature=0, max_new_tokens=tokens)
    start = time.perf_counter()
    with lock:
        answer = engine.generate_full(
            [Request([Turn("human", QUESTION)], IMAGE)],
            settings,
            on_text=lambda _i, _d: first or first.append(time.perf_counter()),
        )[0]
    end = time.perf_counter()
    # generated tokens, as the API's usage.completion_tokens counts them
    return Sample((first[0] if first else end) - start, end - start, answer.num_tokens)


def api_once(client: openai.OpenAI, tokens: int) -> Sample:
    """One streamed request through the OpenAI client."""
    url = "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
    start = time.perf_counter()
    first = None
    used = 0
    stream = client.chat.completions.create(
        model="yi-vl",
        messages=[{"role": "user", "content": content}],
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


def start_server(model: Path, port: int, threads: int) -> subprocess.Popen:
    """``infer.py mode=api`` on 127.0.0.1:port; returns once ``/health`` answers."""
    command = [sys.executable, str(ROOT / "infer.py"), "mode=api", f"model_path={model}", "device=cpu"]
    command += [f"api.port={port}", "api.host=127.0.0.1", "api.log_level=warning", "api.api_key=null"]
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


def summarize(name: str, clients: int, samples: list[Sample], wall: float) -> dict:
    tokens = sum(s.tokens for s in samples)
    return {
        "path": name,
        "clients": clients,
        "requests": len(samples),
        "ttft_ms": 1000 * statistics.median(s.ttft for s in samples),
        "latency_ms": 1000 * statistics.median(s.total for s in samples),
        "tokens": statistics.median(s.tokens for s in samples),
        "client_tok_s": statistics.median(s.tokens / s.total for s in samples),
        "total_tok_s": tokens / wall,
    }


def measure(engine: Engine, client: openai.OpenAI, args: argparse.Namespace) -> list[dict]:
    """Direct and API rounds, alternated so drifting machine load hits both alike."""
    lock = threading.Lock()
    direct = partial(direct_once, engine, args.tokens, lock)
    api = partial(api_once, client, args.tokens)
    for once in (direct, api, direct, api):  # warm-up
        once()
    rows = []
    for clients, requests in ((1, args.requests), (args.clients, max(1, args.requests // 2))):
        runs: dict[str, tuple[list[Sample], float]] = {"direct": ([], 0.0), "api": ([], 0.0)}
        for _ in range(2):
            for name, once in (("direct", direct), ("api", api)):
                samples, wall = run_clients(once, clients, requests)
                runs[name] = (runs[name][0] + samples, runs[name][1] + wall)
        rows += [summarize(name, clients, *runs[name]) for name in ("direct", "api")]
    return rows


def print_table(rows: list[dict], markdown: bool) -> None:
    headers = [
        "path",
        "clients",
        "requests",
        "tokens",
        "TTFT ms",
        "latency ms",
        "tok/s per client",
        "tok/s total",
    ]
    keys = ["path", "clients", "requests", "tokens", "ttft_ms", "latency_ms", "client_tok_s", "total_tok_s"]
    baseline = {r["clients"]: r for r in rows if r["path"] == "direct"}
    cells = []
    for row in rows:
        base = baseline[row["clients"]]
        fmt = [f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        if row["path"] == "api":
            fmt[4] += f" ({row['ttft_ms'] - base['ttft_ms']:+.1f})"
            fmt[7] += f" ({row['total_tok_s'] / base['total_tok_s'] - 1:+.0%})"
        cells.append(fmt)
    if markdown:
        print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
        for c in cells:
            print("| " + " | ".join(c) + " |")
        return
    table = Table(title="Serving latency, tiny model, CPU: API vs the engine in-process (medians)")
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
        server = start_server(model, port, args.threads)
        try:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300
            )
            rows = measure(engine, client, args)
        finally:
            server.terminate()
            server.wait(30)
    print(
        f"{torch.get_num_threads()} torch threads; {args.tokens} greedy tokens per answer; image {IMAGE.name}"
    )
    print_table(rows, args.markdown)


if __name__ == "__main__":
    main()
