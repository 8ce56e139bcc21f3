"""Why a record or sample was dropped: one short code per cause, and counters shared across workers.

The same codes appear in ``data_tools`` reject files, in manifests and in the training logs, so a user
can grep for one name everywhere.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Mapping

from yivl.errors import YivlError

log = logging.getLogger("yivl.data")

REASONS: dict[str, str] = {
    "json_malformed": "the line or element is not valid JSON",
    "record_too_large": "the record is over max_record_bytes (rejected before it is read)",
    "invalid_utf8": "the bytes are not valid UTF-8",
    "not_an_object": "the record is not a JSON object",
    "no_conversations": "the record has no non-empty `conversations` list",
    "value_not_string": "a turn's `from` or `value` (or the `image` path) is not a string",
    "role_empty": "a turn has an empty `from`",
    "role_unknown": "a turn's `from` is not human/user/gpt/assistant",
    "turn_order": "turns do not alternate human/assistant starting with human and ending with assistant",
    "reply_empty": "an assistant reply is empty",
    "placeholder_missing": "the record has an image but no <image_placeholder>",
    "placeholder_count": "more <image_placeholder> than images",
    "placeholder_in_assistant": "an assistant turn holds <image_placeholder>",
    "placeholder_not_first": "the placeholder is not in the first human turn",
    "multiple_images": "more than one image per record (Yi-VL takes one)",
    "image_missing": "the image file does not exist",
    "image_empty": "the image file is zero bytes",
    "image_corrupt": "the image cannot be decoded (corrupt, truncated or not an image)",
    "image_too_large": "the image has more pixels than allowed (decompression bomb guard)",
    "image_too_small": "the image is smaller than the minimum size",
    "caption_missing": "the image-text pair has no caption",
    "caption_length": "the caption is shorter or longer than allowed",
    "chat_format": "the chat format cannot render or mask the conversation",
    "too_long": "longer than the context after image expansion",
    "no_supervised_tokens": "no token of the sample is supervised",
    "shard_corrupt": "a shard member or shard could not be read",
    "sample_incomplete": "a shard sample lacks its JSON record or caption",
    "unexpected_error": "an unexpected error while reading the sample (please report it)",
}
"""Every reject reason, with the sentence shown in summaries."""

_INDEX = {name: i for i, name in enumerate(REASONS)}


class SampleRejected(YivlError):
    """A record or sample that cannot be used; ``reason`` is a key of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reject reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Counts skipped samples by reason in shared memory, so DataLoader workers add to one total.

    Create it in the main process before the workers start; it travels to them with the dataset. A
    warning is logged for the first skip of each process and then every ``log_every`` skips, never with a
    sleep (webdataset's ``warn_and_continue`` sleeps 0.5 s per error).
    """

    def __init__(self, log_every: int = 1000) -> None:
        self._counts = mp.get_context().Array("q", len(REASONS))
        self.log_every = max(1, int(log_every))
        self._local = 0

    def add(self, reason: str, detail: str = "") -> None:
        """Count one skip; log it when it is this process's first or a multiple of ``log_every``."""
        with self._counts.get_lock():
            self._counts[_INDEX[reason]] += 1
        self._local += 1
        if self._local == 1 or self._local % self.log_every == 0:
            log.warning("skipped sample (%s, %d skipped here so far): %s", reason, self._local, detail[:300])

    def counts(self) -> dict[str, int]:
        """Non-zero counts by reason, summed over all processes."""
        with self._counts.get_lock():
            values = list(self._counts)
        return {name: values[i] for name, i in _INDEX.items() if values[i]}

    def total(self) -> int:
        """Number of skipped samples over all reasons and processes."""
        return sum(self.counts().values())

    def reset(self) -> None:
        """Set every count back to zero."""
        with self._counts.get_lock():
            for i in range(len(REASONS)):
                self._counts[i] = 0


def describe(counts: Mapping[str, int]) -> str:
    """``reason=count`` pairs, largest first, for one log line."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k}={v}" for k, v in items) or "none"
