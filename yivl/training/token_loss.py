"""The token-weighted loss of an optimizer step, across gradient accumulation and ranks.

The gradient of one optimizer step must be the gradient of the mean CE over every supervised token of
the global batch (all accumulated micro-batches on all ranks), not a mean of per-micro-batch means. So
each micro-batch returns ``loss_sum * scale / N`` where ``N`` is the supervised-token count of the whole
step (all-reduced over ranks once per step) and ``scale`` undoes what the strategy divides by: Lightning
divides every micro-batch loss by ``accumulate_grad_batches``, the DeepSpeed engine divides it by its
``gradient_accumulation_steps`` once more, and DDP, FSDP2 and ZeRO average gradients over ranks. The
sum of the scaled gradients is then exactly ``d(sum of CE over the step) / N``, also for the shorter
last step of an epoch (Lightning still divides by ``accumulate_grad_batches`` there).

``N`` needs the labels of the step's later micro-batches before the first one's backward: the step's
batches are peeked from the training loop's data iterator (:class:`Lookahead`, installed on Lightning's
data fetcher) and handed out unchanged, in order, to the loop. Only their labels are read, on the host.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

from yivl.models.loss import supervised_count


class Lookahead(Iterator):
    """An iterator that can show its next items without consuming them."""

    def __init__(self, inner: Iterator) -> None:
        self.inner = inner
        self.buffer: deque = deque()

    def __next__(self) -> Any:
        return self.buffer.popleft() if self.buffer else next(self.inner)

    def peek(self, n: int) -> list:
        """Up to ``n`` next items (fewer at the end), left to be returned by ``next``."""
        while len(self.buffer) < n:
            try:
                self.buffer.append(next(self.inner))
            except StopIteration:
                break
        return list(self.buffer)[:n]


def upcoming_batches(trainer: L.Trainer, n: int) -> list[Mapping]:
    """The next ``n`` training batches the loop will get (fewer at the epoch's end), not consumed.

    Lightning's fetcher may already hold prefetched items; its iterator yields (batch, index, loader)."""
    fetcher = trainer.fit_loop._data_fetcher
    if not isinstance(fetcher.iterator, Lookahead):
        fetcher.iterator = Lookahead(fetcher.iterator)
    held = list(getattr(fetcher, "batches", []))  # _PrefetchDataFetcher's prefetched items
    items = [*held, *fetcher.iterator.peek(max(0, n - len(held)))][:n]
    return [item[0] for item in items]


def gradient_divisor(trainer: L.Trainer) -> int:
    """What the strategy divides a micro-batch loss's gradient by, over accumulation and ranks."""
    accumulate = trainer.accumulate_grad_batches
    engine = accumulate if isinstance(trainer.strategy, DeepSpeedStrategy) else 1
    return trainer.world_size * accumulate * engine


class StepTokens:
    """The supervised-token count of the current optimizer step, over its micro-batches and ranks,
    and the summed loss of the step so far (for logging the step's token-weighted mean)."""

    def __init__(self) -> None:
        self.total = 0
        self.loss_sum = torch.zeros(())
        self.last_batch = -1

    def start(self, trainer: L.Trainer, module: L.LightningModule, batch: Mapping, batch_idx: int) -> None:
        """Count the step that ``batch`` (index ``batch_idx`` in the epoch) begins: its micro-batches up
        to the next accumulation boundary (fewer at the epoch's end, or after resuming inside a step)."""
        accumulate = trainer.accumulate_grad_batches
        later = upcoming_batches(trainer, accumulate - 1 - batch_idx % accumulate)
        local = int(supervised_count(batch["labels"])) + sum(
            int(supervised_count(b["labels"])) for b in later
        )
        count = torch.tensor(local, device=module.device, dtype=torch.long)
        self.total = int(trainer.strategy.reduce(count, reduce_op="sum"))
        self.loss_sum = torch.zeros((), device=module.device)
        self.last_batch = batch_idx + len(later)

    def scaled(self, trainer: L.Trainer, loss_sum: torch.Tensor) -> torch.Tensor:
        """The loss whose gradient, after the strategy's divisions, adds up to d(step CE sum) / N."""
        self.loss_sum = self.loss_sum + loss_sum.detach().float()
        return loss_sum * (gradient_divisor(trainer) / max(self.total, 1))

    def step_mean(self, trainer: L.Trainer) -> torch.Tensor:
        """The token-weighted mean CE of the whole step (all ranks); call on its last micro-batch."""
        total = trainer.strategy.reduce(self.loss_sum, reduce_op="sum")
        return total / max(self.total, 1)
