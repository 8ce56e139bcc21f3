"""Fixed batches and a DataLoader that decodes and preprocesses their images in worker processes.

Batches are planned once from the whole task (independent of what a resumed run still has to do): the
items are sorted by prompt length inside windows of ``window`` batches, then cut into batches. A
resumed run re-runs exactly the batches that still hold unfinished items, with the same members, so
it reproduces the answers an uninterrupted run would have given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from yivl.data.images import ImageProcessor, load_image
from yivl.errors import YivlError
from yivl.evaluation.sources import ImageRef

SORT_WINDOW_BATCHES = 16


def plan_batches(
    lengths: Sequence[int], batch_size: int, window: int = SORT_WINDOW_BATCHES
) -> list[list[int]]:
    """Item indices grouped into batches: longest first within each window of ``window * batch_size``."""
    if batch_size < 1:
        raise YivlError(f"batch_size must be >= 1, got {batch_size}")
    span = batch_size * max(1, window)
    batches = []
    for start in range(0, len(lengths), span):
        chunk = sorted(range(start, min(start + span, len(lengths))), key=lambda i: (-lengths[i], i))
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    return batches


class ImageDataset(Dataset):
    """Item index -> (index, pixels [3, S, S] or None, error message or None); errors travel as text."""

    def __init__(
        self, images: Sequence[ImageRef | None], processor: ImageProcessor, pad: bool, max_pixels: int
    ) -> None:
        self.images = list(images)
        self.processor = processor
        self.pad = pad
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        ref = self.images[index]
        if ref is None:
            return index, None, None
        try:
            pil = load_image(ref.read(), max_pixels=self.max_pixels)
            return index, self.processor(pil, pad=self.pad), None
        except YivlError as err:
            return index, None, f"image {ref.display()}: {str(err).splitlines()[0]}"


def _collate(rows: list) -> list:
    return rows


def iterate_batches(
    dataset: ImageDataset, batches: list[list[int]], num_workers: int
) -> Iterator[tuple[list[int], list[torch.Tensor | None]]]:
    """Yield (item indices, their pixels) per batch, in order; a bad image is a one-line YivlError.

    A task of only a few batches decodes in-process: starting worker processes costs more than that.
    """
    if not batches:
        return
    if len(batches) <= 2 * num_workers:
        num_workers = 0
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_collate,
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
    )
    for rows in loader:
        indices, pixels = [], []
        for index, tensor, error in rows:
            if error is not None:
                raise YivlError(f"{error}; fix or remove the image")
            indices.append(index)
            pixels.append(tensor)
        yield indices, pixels
