"""Why a record or sample was dropped: one short code per cause, and counters shared across workers.

The same codes appear in ``data_tools`` reject files, in manifests and in the training logs, so a user
can grep for one name everywhere.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    "placeholder_missing": "an image but none of the image tokens; add its token to image_tokens or "
    "--image-tokens",
    "placeholder_count": "more <image_placeholder> than images",
    "placeholder_in_assistant": "an assistant turn holds <image_placeholder>",
    "placeholder_not_first": "the placeholder is not in the first human turn",
    "multiple_images": "more than one image per record (Yi-VL takes one)",
    "image_missing": "the image file does not exist",
    "image_empty": "the image file is zero bytes",
    "image_outside_folder": "the image path resolves outside the image folder (.., absolute, symlink)",
    "image_not_regular_file": "the image path is a FIFO, device, directory or socket, not a file",
    "image_file_too_large": "the image file is over max_image_bytes",
    "image_corrupt": "the image cannot be decoded (corrupt, truncated or not an image)",
    "image_too_large": "the image has more pixels than allowed (decompression bomb guard)",
    "image_too_small": "the image is smaller than the minimum size",
    "caption_missing": "the image-text pair has no caption",
    "caption_length": "the caption is shorter or longer than allowed",
    "chat_format": "the chat format cannot render or mask the conversation",
    "too_long": "longer than the context after image expansion",
    "sample_too_large": "the sample's bytes are over the shard byte limit (--max-bytes)",
    "no_supervised_tokens": "no token of the sample is supervised",
    "shard_corrupt": "a shard member or shard could not be read",
    "sample_incomplete": "a shard sample lacks its JSON record or caption",
    "unexpected_error": "an unexpected error while reading the sample (please report it)",
}
"""Every reject reason, with the sentence shown in summaries."""

REPAIRS: dict[str, str] = {
    "assistant_first_dropped": "the record started with an assistant turn; it was dropped (as LLaVA does)",
    "placeholder_moved": "the image token was in a later human turn; moved to the start of the first one",
    "placeholder_deduplicated": "the image token appeared twice in one turn; one kept (as LLaVA does)",
}
"""Every repair: the record is still used (and written), the change is counted by this name."""

_INDEX = {name: i for i, name in enumerate(REASONS)}
_REPAIR_INDEX = {name: i for i, name in enumerate(REPAIRS)}


_SEEN_FIELDS = 3


@dataclass
class Tally:
    """Counts of one source or run: usable records, rejects and repairs by reason, image records."""

    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    image_records: int = 0  # records naming an image, kept or rejected
    image_kept: int = 0

    @property
    def total(self) -> int:
        return self.kept + sum(self.rejected.values())

    def add(self, reason: str | None, has_image: bool, repairs: tuple[str, ...] = ()) -> None:
        """Count one record: kept (``reason`` None, with its repairs) or rejected for ``reason``."""
        self.image_records += int(has_image)
        if reason is not None:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            return
        self.kept += 1
        self.image_kept += int(has_image)
        for name in repairs:
            self.repaired[name] = self.repaired.get(name, 0) + 1


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
        ctx = mp.get_context()
        self._counts = ctx.Array("q", len(REASONS))
        self._repairs = ctx.Array("q", len(REPAIRS))
        self._seen = ctx.Array("q", _SEEN_FIELDS)  # kept, image records seen, image records kept
        self.log_every = max(1, int(log_every))
        self._local = 0

    def add(self, reason: str, detail: str = "", has_image: bool = False) -> None:
        """Count one skip; log it when it is this process's first or a multiple of ``log_every``."""
        with self._counts.get_lock():
            self._counts[_INDEX[reason]] += 1
            self._seen[1] += int(has_image)
        self._local += 1
        if self._local == 1 or self._local % self.log_every == 0:
            log.warning("skipped sample (%s, %d skipped here so far): %s", reason, self._local, detail[:300])

    def kept(self, has_image: bool, repairs: tuple[str, ...] = ()) -> None:
        """Count one usable sample and the repairs that made it so."""
        with self._counts.get_lock():
            self._seen[0] += 1
            self._seen[1] += int(has_image)
            self._seen[2] += int(has_image)
            for name in repairs:
                self._repairs[_REPAIR_INDEX[name]] += 1

    def tally(self) -> Tally:
        """Everything counted so far, summed over all processes."""
        with self._counts.get_lock():
            skips, repairs, seen = list(self._counts), list(self._repairs), list(self._seen)
        return Tally(
            kept=seen[0],
            rejected={name: skips[i] for name, i in _INDEX.items() if skips[i]},
            repaired={name: repairs[i] for name, i in _REPAIR_INDEX.items() if repairs[i]},
            image_records=seen[1],
            image_kept=seen[2],
        )

    def repair_counts(self) -> dict[str, int]:
        """Non-zero repair counts by name, summed over all processes."""
        return self.tally().repaired

    def counts(self) -> dict[str, int]:
        """Non-zero counts by reason, summed over all processes."""
        with self._counts.get_lock():
            values = list(self._counts)
        return {name: values[i] for name, i in _INDEX.items() if values[i]}

    def total(self) -> int:
        """Number of skipped samples over all reasons and processes."""
        return sum(self.counts().values())


def describe(counts: Mapping[str, int]) -> str:
    """``reason=count`` pairs, largest first, for one log line."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k}={v}" for k, v in items) or "none"
