"""Outcomes in input order -> shards bounded by sample count and bytes, committed to the journal.

The writer is single and sequential, so shard boundaries depend only on the input, never on how many
processes prepared the samples or when they finished.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from data_tools.journal import Journal, append_rejects
from data_tools.report import console
from yivl.data.shards import TarShardWriter, sample_bytes, shard_name


@dataclass
class Outcome:
    """What happened to one input record: written (``members``) or rejected (``reason``)."""

    index: int
    key: str
    reason: str | None = None
    detail: str = ""
    members: dict[str, bytes] | None = None
    tokens: int = 0
    image_size: tuple[int, int] | None = None
    image_action: str = "text_only"  # text_only | passed_through | trimmed | reencoded
    extra: dict = field(default_factory=dict)  # tool-specific fields for the rejects file
    repairs: tuple[str, ...] = ()  # repairs of a written record (yivl.data.reasons.REPAIRS)
    has_image: bool = False  # the record names an image (for the all-image-records-rejected rule)

    def reject_line(self) -> dict:
        return {
            "index": self.index,
            "key": self.key,
            "reason": self.reason,
            "detail": self.detail,
            **self.extra,
        }


def _crash_point(stage: str, commits: int) -> None:
    """Test hook: ``YIVL_DATA_TOOLS_CRASH=<stage>:<n>`` kills the process at ``stage`` of commit ``n``."""
    want = os.environ.get("YIVL_DATA_TOOLS_CRASH")
    if want and want == f"{stage}:{commits}":
        os.kill(os.getpid(), signal.SIGKILL)


class ShardSequence:
    """Adds outcomes in input order; rolls over to a new shard when the next sample would not fit."""

    def __init__(self, journal: Journal, max_samples: int, max_bytes: int, prefix: str = "shard") -> None:
        self.journal = journal
        self.max_samples, self.max_bytes, self.prefix = max_samples, max_bytes, prefix
        self.start = journal.next_index
        self.shard_index = journal.next_shard
        self.writer: TarShardWriter | None = None
        self.rejects: list[Outcome] = []
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.tokens: Counter = Counter()
        self.images: Counter = Counter()
        self.repaired: Counter = Counter()
        self.repaired_records = 0
        self.first_key: str | None = None

    def add(self, outcome: Outcome) -> None:
        if outcome.reason is not None:
            self.rejects.append(outcome)
            return
        size = sample_bytes(outcome.members)
        if size > self.max_bytes:  # it would get a shard of its own, over the limit
            outcome.reason, outcome.members = "sample_too_large", None
            outcome.detail = (
                f"{outcome.key}: the sample is {size} bytes in a tar, over the shard limit "
                f"--max-bytes={self.max_bytes}; shrink its image or raise --max-bytes"
            )
            self.rejects.append(outcome)
            return
        if self.writer is not None and self.writer.nbytes + size > self.max_bytes:
            self.commit(end=outcome.index)
        if self.writer is None:
            self.writer = TarShardWriter(self.journal.out_dir / shard_name(self.shard_index, self.prefix))
        self.writer.write(outcome.key, outcome.members)
        self.tokens[outcome.tokens] += 1
        self.images[outcome.image_action] += 1
        self.repaired.update(outcome.repairs)
        self.repaired_records += bool(outcome.repairs)
        _crash_point("mid_shard", len(self.journal.commits))
        if self.writer.count >= self.max_samples:
            self.commit(end=outcome.index + 1)

    def commit(self, end: int) -> None:
        """Close the open shard (if any) and record ``[start, end)`` with its rejects."""
        shard = None
        if self.writer is not None:
            count = self.writer.count
            nbytes = self.writer.close()
            shard = {"name": self.writer.path.name, "samples": count, "bytes": nbytes}
            self.writer, self.shard_index = None, self.shard_index + 1
        n = len(self.journal.commits)
        _crash_point("after_rename", n)
        offset = append_rejects(self.journal.out_dir, [r.reject_line() for r in self.rejects])
        _crash_point("after_rejects", n)
        reasons = Counter(r.reason for r in self.rejects)
        self.journal.append(
            {
                "start": self.start,
                "end": end,
                "shard": shard,
                "rejects": len(self.rejects),
                "reasons": dict(sorted(reasons.items())),
                "rejects_offset": offset,
                "tokens": {str(k): v for k, v in sorted(self.tokens.items())},
                "images": dict(sorted(self.images.items())),
                "repaired": dict(sorted(self.repaired.items())),
                "repaired_records": self.repaired_records,
                "rejected_images": sum(r.has_image for r in self.rejects),
            }
        )
        self.start, self.rejects = end, []
        self._reset_stats()

    def finish(self, total: int) -> None:
        """Commit what is left at the end of the input."""
        if self.writer is not None or self.rejects or self.start < total:
            self.commit(end=total)

    def abort(self) -> None:
        """Drop the open shard after an interruption (the journal already holds every commit)."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    @contextmanager
    def aborting_on_error(self) -> Iterator[ShardSequence]:
        """Drop the open shard if the block fails; after Ctrl-C, say how far it got and how to resume."""
        try:
            yield self
        except KeyboardInterrupt:
            self.abort()
            done = self.journal.next_shard
            console.print(f"interrupted after {done} complete shards; rerun the same command to resume")
            raise
        except BaseException:
            self.abort()
            raise
