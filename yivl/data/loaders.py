"""DataLoaders that know the epoch and can resume mid-epoch.

Lightning calls ``set_epoch`` only on samplers, and a streaming dataset has none, so these loaders set
the epoch themselves at each ``iter()``: the trainer's current epoch when one is attached (``epoch_fn``),
else the count of iterations so far. ``resume(batches, epoch)`` leaves out the first batches of that
epoch. ``state_dict``/``load_state_dict`` make them resumable loaders in Lightning's sense.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from yivl.data.map_dataset import LengthGroupedSampler
from yivl.data.packing import PackedSampler

EpochFn = Callable[[], int] | None
RESUMABLE_SAMPLERS = (LengthGroupedSampler, PackedSampler)


class _PositionMixin:
    """Epoch bookkeeping shared by both loaders (``batches_yielded`` counts only without a trainer)."""

    _epoch_fn: EpochFn
    _iterations: int
    epoch: int
    batches_yielded: int

    def _next_epoch(self) -> int:
        self.epoch = self._epoch_fn() if self._epoch_fn is not None else self._iterations
        self._iterations += 1
        self.batches_yielded = 0
        return self.epoch

    def _counted(self, it: Iterator, skip: int) -> Iterator:
        self.batches_yielded = skip
        for batch in it:
            self.batches_yielded += 1
            yield batch

    def attach(self, owner: Any) -> None:
        """Let ``owner`` (the data module) hold the position: it reads the trainer's progress."""
        self._owner = owner

    def state_dict(self) -> dict[str, Any]:
        owner = getattr(self, "_owner", None)
        return (
            owner.state_dict()
            if owner is not None
            else {"epoch": self.epoch, "batches_done": self.batches_yielded}
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        owner = getattr(self, "_owner", None)
        if owner is not None:  # the owner converts positions saved with another batch or world size
            owner.load_state_dict(state_dict)
            self.resume(owner.resume_batches(), int(state_dict["epoch"]))
        elif "batches_done" in state_dict:
            self.resume(int(state_dict["batches_done"]), int(state_dict["epoch"]))

    def resume(self, batches: int, epoch: int) -> None:
        raise NotImplementedError


class MapDataLoader(_PositionMixin, DataLoader):
    """Batches of a :class:`ConversationDataset` in the order of a :class:`LengthGroupedSampler` (or
    packed rows of it, in the order of a :class:`PackedSampler`).

    Takes DataLoader's arguments (plus ``epoch_fn``), so Lightning can re-create it with another
    sampler (``overfit_batches`` does); epochs and resuming then apply only if that sampler supports them.
    """

    def __init__(self, *args: Any, epoch_fn: EpochFn = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch_fn, self._iterations, self.epoch, self.batches_yielded = epoch_fn, 0, 0, 0
        self._skip: tuple[int, int] | None = None

    def resume(self, batches: int, epoch: int) -> None:
        if isinstance(self.sampler, RESUMABLE_SAMPLERS):
            self._skip = (epoch, batches)
            self.sampler.skip_batches(epoch, batches)

    def __iter__(self) -> Iterator:
        epoch = self._next_epoch()
        if isinstance(self.sampler, RESUMABLE_SAMPLERS):
            self.sampler.set_epoch(epoch)
        skip = self._skip[1] if self._skip is not None and self._skip[0] == epoch else 0
        it = super().__iter__()
        return it if self._epoch_fn is not None else self._counted(it, skip)


class StreamDataLoader(_PositionMixin, DataLoader):
    """Batches of a :class:`StreamingDataset`, collated in the workers (so ``batch_size=None``)."""

    def __init__(self, *args: Any, epoch_fn: EpochFn = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch_fn, self._iterations, self.epoch, self.batches_yielded = epoch_fn, 0, 0, 0

    def resume(self, batches: int, epoch: int) -> None:
        self.dataset.position.resume_at(epoch, batches)

    def __iter__(self) -> Iterator:
        epoch = self._next_epoch()
        self.dataset.position.set_epoch(epoch)
        it = super().__iter__()
        return it if self._epoch_fn is not None else self._counted(it, self.dataset.position.skip(epoch))
