"""The streaming training set: sources mixed by weight, encoded, batched, a fixed number of batches.

Every rank yields exactly ``batches_per_epoch`` batches per epoch (split over its DataLoader workers),
so no rank waits on another at the end of an epoch: in exhaustive mode a reader that runs out of data
starts its next pass over its share, in resampled mode the stream never ends. Rejected samples are
skipped and counted, never fatal.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import warnings
from collections.abc import Iterator, Sequence

from torch.utils.data import IterableDataset

from yivl.data.collate import Collator, Sample
from yivl.data.encode import SampleEncoder, encode_counted
from yivl.data.guard import RejectGuard
from yivl.data.packing import pack_stream, sample_length
from yivl.data.reasons import SkipCounter
from yivl.data.sources import RawItem, StreamSource, WorkerInfo, current_worker_info
from yivl.errors import YivlError

# Each worker reads its own share and yields its own quota, so the length is exact; Lightning warns anyway.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


class EpochPosition:
    """Epoch and resume point shared with the DataLoader workers (shared memory, set in the main process)."""

    def __init__(self) -> None:
        ctx = mp.get_context()
        self._values = ctx.Array("q", [0, -1, 0])  # epoch, epoch to resume in, batches done in it

    @property
    def epoch(self) -> int:
        return int(self._values[0])

    def set_epoch(self, epoch: int) -> None:
        self._values[0] = int(epoch)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """The next iteration of ``epoch`` leaves out its first ``batches_done`` batches."""
        self._values[1], self._values[2] = int(epoch), int(batches_done)

    def skip(self, epoch: int) -> int:
        """Batches to leave out at the start of ``epoch``."""
        return int(self._values[2]) if int(self._values[1]) == epoch else 0


def worker_quota(total: int, info: WorkerInfo) -> int:
    """This worker's share of ``total`` batches; DataLoader takes batches from workers round-robin."""
    return total // info.num_workers + (1 if info.worker < total % info.num_workers else 0)


def weighted_mix(streams: Sequence[Iterator], weights: Sequence[float], rng: random.Random) -> Iterator:
    """Pick the next item from a stream chosen by weight; a finished stream drops out."""
    active = [i for i, w in enumerate(weights) if w > 0]
    while active:
        i = rng.choices(active, weights=[weights[a] for a in active])[0]
        try:
            yield next(streams[i])
        except StopIteration:
            active.remove(i)


class StreamingDataset(IterableDataset):
    """Batches ``{input_ids, labels, attention_mask, pixel_values}`` from weighted streaming sources.

    ``batches_per_epoch`` is per rank; None reads one exhaustive pass (evaluation), keeping the last
    partial batch. ``bind()`` attaches the model-dependent encoder and collator. With ``pack`` set to
    ``(pack_length, buffer)`` a batch is ``batch_size`` packed rows (see :mod:`yivl.data.packing`) and
    the collator is a ``PackedCollator``.
    """

    def __init__(
        self,
        sources: Sequence[StreamSource],
        batch_size: int,
        batches_per_epoch: int | None,
        resampled: bool = False,
        seed: int = 0,
        skips: SkipCounter | None = None,
        position: EpochPosition | None = None,
    ) -> None:
        super().__init__()
        if not sources:
            raise YivlError("a data config needs at least one source")
        self.sources = list(sources)
        self.batch_size = int(batch_size)
        self.batches_per_epoch = batches_per_epoch
        self.resampled = resampled
        self.seed = seed
        self.skips = skips if skips is not None else SkipCounter()
        self.position = position if position is not None else EpochPosition()
        self.encoder: SampleEncoder | None = None
        self.collator: Collator | None = None
        self.worker_info: WorkerInfo | None = None  # tests pin this; None = ask torch
        self.guard: RejectGuard | None = None  # the reject rule, judged as samples are counted
        self.pack: tuple[int, int] | None = None  # (pack_length, buffer) to batch packed rows

    def bind(self, encoder: SampleEncoder, collator: Collator) -> None:
        self.encoder, self.collator = encoder, collator

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("an exhaustive single-pass stream has no known length")
        return self.batches_per_epoch

    def _check_split(self, info: WorkerInfo) -> None:
        for source in self.sources:
            if not self.resampled and source.num_units < info.slots:
                raise YivlError(
                    f"a source has {source.num_units} shards/records for {info.slots} readers "
                    f"({info.world_size} ranks x {info.num_workers} workers); use resampled: true, fewer "
                    "workers, or more shards"
                )

    def _passes(
        self, source: StreamSource, epoch: int, salt: int, info: WorkerInfo, repeat: bool
    ) -> Iterator[RawItem]:
        """One pass over this reader's share, or (``repeat``) pass after pass."""
        pass_index = 0
        while True:
            seen = 0
            pass_id = f"{pass_index}.{salt}"
            for item in source.items(epoch, pass_id, info, self.skips, self.resampled, self.seed):
                seen += 1
                yield item
            if not repeat:
                return
            if seen == 0:
                raise YivlError(
                    "a data source yielded nothing in a full pass; check its shards and the skip counts"
                )
            pass_index += 1

    def samples(self, epoch: int, salt: int, info: WorkerInfo, repeat: bool) -> Iterator[Sample]:
        """Encoded samples of this reader; rejects are counted and skipped."""
        streams = [self._passes(s, epoch, salt, info, repeat) for s in self.sources]
        rng = random.Random(f"{self.seed}-{epoch}-{salt}-{info.slot}-mix")
        for item in weighted_mix(streams, [s.weight for s in self.sources], rng):
            has_image = item.record.get("image") not in (None, "", [])
            sample = encode_counted(self.encoder, item.record, item.image, item.key, self.skips, has_image)
            if self.guard is not None:
                self.guard.check()
            if sample is not None:
                yield sample

    def _units(self, samples: Iterator[Sample]) -> Iterator[Sample] | Iterator[list[Sample]]:
        """What a batch is made of: samples, or packed rows of them."""
        if self.pack is None:
            return samples
        tokens = self.encoder.num_image_tokens
        return pack_stream(samples, lambda s: sample_length(s, tokens), *self.pack)

    def __iter__(self) -> Iterator[dict]:
        if self.encoder is None or self.collator is None:
            raise RuntimeError("call bind() before iterating")
        info = self.worker_info or current_worker_info()
        self._check_split(info)
        epoch = self.position.epoch
        skip = self.position.skip(epoch)
        fixed = self.batches_per_epoch is not None
        quota = worker_quota(self.batches_per_epoch - skip, info) if fixed else None
        if quota == 0:
            return
        batch: list = []
        produced = 0
        for unit in self._units(self.samples(epoch, skip, info, repeat=fixed)):
            batch.append(unit)
            if len(batch) == self.batch_size:
                yield self.collator(batch)
                batch, produced = [], produced + 1
                if produced == quota:
                    break
        else:
            if batch and not fixed:
                yield self.collator(batch)
        if self.guard is not None:
            self.guard.check(final=True)
