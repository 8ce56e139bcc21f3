"""Multimodal sequence packing: samples -> rows of at most ``pack_length`` tokens (image features counted).

One packer serves both kinds of source: :func:`pack_stream` holds at most ``buffer`` samples; when
the buffer is full it closes one row, started by the oldest sample (so none waits forever) and filled
from the buffer with the longest sample that still fits, again and again; at the end of the stream it
empties the buffer. Map-style data runs it over each epoch's shuffled indices, so the rows of an epoch
are a deterministic function of ``(seed, epoch)``; streaming data runs it over the samples as they
arrive. Every sample lands in exactly one row. (Best-fit-decreasing in windows of the same size filled
rows less well on the mix665k-shaped lengths: bench/packing_efficiency.py.) Samples longer than
``pack_length`` never get here: the encoder rejects them as ``too_long`` (counted with the other skips).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

from yivl.data.collate import Sample
from yivl.errors import YivlError

T = TypeVar("T")


def pack_indices(indices: np.ndarray, lengths: np.ndarray, pack_length: int, buffer: int) -> list[list[int]]:
    """Sample indices (already shuffled) packed into rows of indices by :func:`pack_stream`."""
    return list(pack_stream(iter(indices.tolist()), lambda i: int(lengths[i]), pack_length, buffer))


def pack_stream(
    items: Iterator[T], length_of: Callable[[T], int], pack_length: int, buffer: int
) -> Iterator[list[T]]:
    """Rows of ``items`` (in arrival order inside a row), holding at most ``buffer`` items at a time."""
    held: dict[int, T] = {}
    by_length: list[tuple[int, int]] = []  # (length, arrival number) of the held items, sorted

    def close_row() -> list[T]:
        oldest = next(iter(held))  # dicts keep insertion order: the first key arrived first
        room = pack_length - length_of(held[oldest])
        chosen = [oldest]
        by_length.remove((length_of(held[oldest]), oldest))
        while by_length and by_length[0][0] <= room:
            at = bisect.bisect_right(by_length, (room, float("inf"))) - 1  # the longest that fits
            n, k = by_length.pop(at)
            chosen.append(k)
            room -= n
        return [held.pop(k) for k in sorted(chosen)]

    for number, item in enumerate(items):
        n = length_of(item)
        if not 0 < n <= pack_length:
            raise ValueError(f"a sample of {n} tokens cannot go into rows of {pack_length}")
        held[number] = item
        bisect.insort(by_length, (n, number))
        if len(held) >= buffer:
            yield close_row()
    while held:
        yield close_row()


def sample_length(sample: Sample, num_image_tokens: int) -> int:
    """Tokens the LLM sees for ``sample``: its ids with every image expanded to its features."""
    return len(sample.input_ids) + sample.num_images * (int(num_image_tokens) - 1)


class PackedRows(Dataset):
    """A map-style dataset read a row at a time: ``rows[(i, j, ...)]`` -> the usable samples i, j, ...

    ``fetch(i)`` returns None for a sample rejected while reading (its image, say): it is already counted,
    and the row is used without it (replacing it by another record could overflow the row).
    """

    def __init__(self, dataset: Dataset, fetch: Callable[[int], Sample | None]) -> None:
        self.dataset, self.fetch = dataset, fetch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, row: Sequence[int]) -> list[Sample]:
        return [s for s in (self.fetch(int(i)) for i in row) if s is not None]


class PackedSampler(DistributedSampler):
    """Rows of sample indices for one rank, one shuffled and packed epoch at a time.

    ``lengths`` [N] are exact (image features counted); negative marks a sample left out (rejected while
    measuring). Each epoch shuffles the usable samples with ``(seed, epoch)``, packs them (see
    :func:`pack_indices`), shuffles the rows and deals global batches of ``batch_size`` rows per rank.
    Every rank computes the same plan, so ranks agree on the number of batches. The number of batches is
    the first epoch's in every epoch (another shuffle may pack into a row or two more or fewer): Lightning
    reads ``len()`` once, and an epoch that ran longer or shorter would be cut or ended early, and the
    token-weighted loss would count a step's batches that never run. A later epoch with more rows leaves
    its last ones out (as ``drop_last`` does), one with fewer repeats its first ones. ``skip_batches``
    drops the first batches of one epoch, to resume mid-epoch.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        pack_length: int,
        buffer: int,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths = np.asarray(lengths)
        self.usable = np.flatnonzero(self.lengths > 0)
        self.pack_length, self.buffer = int(pack_length), int(buffer)
        self.batch_size, self.drop_last = int(batch_size), drop_last
        self._skip: tuple[int, int] | None = None
        self._plan: tuple[int, list[list[int]]] | None = None
        rows, per_batch = len(self._rows()), self.batch_size * self.num_replicas
        self.num_batches = rows // per_batch if drop_last else -(-rows // per_batch)
        if self.num_batches == 0:
            raise YivlError(
                f"{len(self.usable)} samples packed into rows of {pack_length} cannot fill one batch of "
                f"{batch_size} rows x {num_replicas} ranks; lower data.batch_size"
            )

    def _rows(self) -> list[list[int]]:
        """This epoch's rows, all ranks' (computed once per epoch)."""
        if self._plan is None or self._plan[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            rows = pack_indices(rng.permutation(self.usable), self.lengths, self.pack_length, self.buffer)
            self._plan = (self.epoch, [rows[i] for i in rng.permutation(len(rows))])
        return self._plan[1]

    def skip_batches(self, epoch: int, batches: int) -> None:
        """Leave out the first ``batches`` batches of ``epoch`` (once)."""
        self._skip = (epoch, batches) if batches > 0 else None

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        rows, per_batch = self._rows(), self.batch_size * self.num_replicas
        needed = self.num_batches * per_batch
        rows = (rows * (needed // len(rows) + 1))[:needed]  # fewer rows than needed wrap around
        mine = [
            tuple(rows[b * per_batch + self.rank * self.batch_size + k])
            for b in range(self.num_batches)
            for k in range(self.batch_size)
        ]
        if self._skip is not None and self._skip[0] == self.epoch:
            mine = mine[self._skip[1] * self.batch_size :]
            self._skip = None
        return iter(mine)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size
