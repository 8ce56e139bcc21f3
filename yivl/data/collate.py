"""One training sample as tensors, and the collator that pads samples into a batch with fixed keys."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from yivl.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

BATCH_KEYS = ("input_ids", "labels", "attention_mask", "pixel_values")


@dataclass
class Sample:
    """A tokenized, masked conversation and its processed image(s).

    input_ids: ``[T]`` long, ``-200`` where an image's features go. labels: ``[T]`` long, ``-100`` where
    unsupervised. pixel_values: ``[n, 3, S, S]`` float32, one row per ``-200`` in ``input_ids``.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    key: str = ""
    repairs: tuple[str, ...] = ()  # what yivl.data.formats changed to make the record usable

    @property
    def num_images(self) -> int:
        return int(self.pixel_values.shape[0])


class Collator:
    """Right-pads samples into ``input_ids``/``labels``/``attention_mask`` ``[B, T]`` and stacks images.

    ``pixel_values`` is ``[N, 3, S, S]`` with the images in the row-major order of their ``-200`` ids,
    ``[0, 3, S, S]`` for a text-only batch. Padding uses id ``pad_token_id`` and label ``-100``.
    """

    def __init__(self, image_size: int, pad_token_id: int = 0) -> None:
        self.image_size = int(image_size)
        self.pad_token_id = int(pad_token_id)

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        longest = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), longest), dtype=torch.long)
        for row, s in enumerate(samples):
            n = len(s.input_ids)
            input_ids[row, :n] = s.input_ids
            labels[row, :n] = s.labels
            attention_mask[row, :n] = 1
        images = [s.pixel_values for s in samples if s.num_images]
        size = self.image_size
        pixel_values = torch.cat(images) if images else torch.zeros((0, 3, size, size), dtype=torch.float32)
        expected = int((input_ids == IMAGE_TOKEN_INDEX).sum())
        if pixel_values.shape[0] != expected:
            raise ValueError(f"batch holds {expected} image ids but {pixel_values.shape[0]} images")
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "pixel_values": pixel_values,
        }


class PackedCollator(Collator):
    """Batches of packed rows: each row's samples are concatenated, then padded as by :class:`Collator`.

    Adds ``sequence_ids`` ``[R, T]``: the sample each token belongs to in its row (0, 1, ...; -1 on
    padding). Images stay in the row-major order of their ``-200`` ids, so each lands in its own sample.
    Rows left empty (every sample rejected while reading) are dropped.
    """

    def __call__(self, rows: list[list[Sample]]) -> dict[str, torch.Tensor]:
        rows = [row for row in rows if row]
        joined = [
            Sample(
                torch.cat([s.input_ids for s in row]),
                torch.cat([s.labels for s in row]),
                torch.cat([s.pixel_values for s in row]),
            )
            for row in rows
        ]
        batch = super().__call__(joined)
        sequence_ids = torch.full_like(batch["input_ids"], -1)
        for r, row in enumerate(rows):
            lengths = torch.tensor([len(s.input_ids) for s in row])
            sequence_ids[r, : int(lengths.sum())] = torch.repeat_interleave(torch.arange(len(row)), lengths)
        batch["sequence_ids"] = sequence_ids
        return batch
