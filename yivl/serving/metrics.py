"""Serving metrics in the Prometheus text format (``GET /metrics``), written without a client library."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

from yivl.models.image_prefix import ImagePrefixCache

# seconds; a tiny model on a CPU answers in milliseconds, a 34B one on a busy GPU in seconds
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServingMetrics:
    """Counters the worker updates from its thread and the API renders from another."""

    def __init__(self, queue_depth: Callable[[], int], images: ImagePrefixCache | None = None) -> None:
        self.queue_depth = queue_depth
        self.images = images  # the worker's image-prefix cache, read (never written) here
        self._running = 0
        self.peak_running = 0  # the largest batch so far
        self.requests = 0  # finished requests (any outcome)
        self.tokens = 0  # generated tokens
        self.started = time.monotonic()
        self._ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)
        self._ttft_sum = 0.0
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        """Rows in the running batch."""
        return self._running

    @running.setter
    def running(self, rows: int) -> None:
        self._running = rows
        self.peak_running = max(self.peak_running, rows)

    def add_tokens(self, n: int) -> None:
        with self._lock:
            self.tokens += n

    def first_token(self, seconds: float) -> None:
        """Record one request's time from submission to its first generated token."""
        with self._lock:
            self._ttft_counts[bisect.bisect_left(TTFT_BUCKETS, seconds)] += 1
            self._ttft_sum += seconds

    def finished(self) -> None:
        with self._lock:
            self.requests += 1

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        with self._lock:
            counts, total_s, tokens = list(self._ttft_counts), self._ttft_sum, self.tokens
            lines = [
                *_metric("yivl_queue_depth", "gauge", "requests waiting for a place in the batch"),
                f"yivl_queue_depth {self.queue_depth()}",
                *_metric("yivl_running_batch_size", "gauge", "rows (choices) in the running batch"),
                f"yivl_running_batch_size {self.running}",
                *_metric("yivl_running_batch_size_max", "gauge", "the largest running batch so far"),
                f"yivl_running_batch_size_max {self.peak_running}",
                *_metric("yivl_requests_total", "counter", "requests finished, cancelled or failed"),
                f"yivl_requests_total {self.requests}",
                *_metric("yivl_generated_tokens_total", "counter", "tokens generated (eos included)"),
                f"yivl_generated_tokens_total {tokens}",
                *_metric("yivl_tokens_per_second", "gauge", "generated tokens / s since the server started"),
                f"yivl_tokens_per_second {tokens / max(time.monotonic() - self.started, 1e-9):.3f}",
                *_metric("yivl_time_to_first_token_seconds", "histogram", "submission to first token"),
            ]
        cumulative = 0
        for bound, count in zip((*map(str, TTFT_BUCKETS), "+Inf"), counts, strict=True):
            cumulative += count
            lines.append(f'yivl_time_to_first_token_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines += [
            f"yivl_time_to_first_token_seconds_sum {total_s:.6f}",
            f"yivl_time_to_first_token_seconds_count {cumulative}",
        ]
        if self.images is not None:
            images = self.images
            lines += [
                *_metric("yivl_image_prefix_cache_hits_total", "counter", "rows prefilled after kept KV"),
                f"yivl_image_prefix_cache_hits_total {images.hits}",
                *_metric("yivl_image_prefix_cache_misses_total", "counter", "rows whose image was not kept"),
                f"yivl_image_prefix_cache_misses_total {images.misses}",
                *_metric("yivl_image_prefix_cache_bytes", "gauge", "bytes of kept image-prefix KV"),
                f"yivl_image_prefix_cache_bytes {images.nbytes}",
            ]
        return "\n".join(lines) + "\n"


def _metric(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
