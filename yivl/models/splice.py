"""Splicing image features into token embeddings (the Yi-VL / LLaVA multimodal input).

Each -200 id in ``input_ids`` is replaced by the P feature rows of its image. The attention mask, the
position ids and the labels are rebuilt per sample *after* splicing, so that, unlike the original code's
right-appended mask, padding stays exactly where the mask says it is, on the side requested.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from yivl.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from yivl.errors import YivlError


@dataclass
class Spliced:
    """LLM inputs after splicing: embeds [B, L, H], attention_mask [B, L] (1 = real), position_ids [B, L]
    (0.. per sample, 1 on pads as in the original), labels [B, L] (-100 on image rows and pads) or None."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None


def image_slots(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Bool [B, T]: the -200 ids at unpadded positions, i.e. where an image goes."""
    return (input_ids == IMAGE_TOKEN_INDEX) & attention_mask.bool()


def check_image_count(input_ids: torch.Tensor, attention_mask: torch.Tensor, num_images: int) -> None:
    """Raise YivlError unless the batch has exactly one image per -200 placeholder id."""
    slots = int(image_slots(input_ids, attention_mask).sum())
    if slots != num_images:
        raise YivlError(
            f"the batch has {slots} image placeholder(s) (id {IMAGE_TOKEN_INDEX}) but {num_images} "
            "image(s) in pixel_values; give one image per <image_placeholder>"
        )


def splice(
    embed_tokens: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_features: torch.Tensor | None,
    labels: torch.Tensor | None = None,
    padding_side: str = "right",
) -> Spliced:
    """Embed ``input_ids`` [B, T] and put image k's features [N, P, H] at the k-th -200 (row-major order).

    Positions where ``attention_mask`` [B, T] is 0 are padding (any id) and are dropped; the real tokens of
    each sample are packed to the ``padding_side`` of the output and the rest is padded with zero rows.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    is_image = image_slots(input_ids, attention_mask)
    is_text = attention_mask.bool() & ~is_image
    check_image_count(input_ids, attention_mask, 0 if image_features is None else image_features.shape[0])
    num_rows = 1 if image_features is None else image_features.shape[1]
    width = is_text.long() + is_image.long() * num_rows  # rows each input position becomes
    lengths = width.sum(1)
    total = int(lengths.max()) if lengths.numel() else 0
    offset = total - lengths if padding_side == "left" else torch.zeros_like(lengths)
    start = width.cumsum(1) - width + offset[:, None]  # [B, T] first output row of each input position

    text_embeds = embed_tokens(torch.where(is_text, input_ids, 0))
    batch, _, hidden = text_embeds.shape
    embeds = text_embeds.new_zeros(batch, total, hidden)
    tb, tt = is_text.nonzero(as_tuple=True)
    embeds[tb, start[tb, tt]] = text_embeds[tb, tt]
    if image_features is not None and image_features.shape[0] > 0:
        ib, it = is_image.nonzero(as_tuple=True)
        rows = start[ib, it][:, None] + torch.arange(num_rows, device=start.device)
        embeds[ib[:, None].expand_as(rows), rows] = image_features.to(embeds.dtype)

    pos = torch.arange(total, device=start.device)[None]
    mask = (pos >= offset[:, None]) & (pos < (offset + lengths)[:, None])
    position_ids = (mask.long().cumsum(1) - 1).masked_fill(~mask, 1)
    new_labels = None
    if labels is not None:
        new_labels = labels.new_full((batch, total), IGNORE_INDEX)
        new_labels[tb, start[tb, tt]] = labels[tb, tt]
    return Spliced(embeds, mask.long(), position_ids, new_labels)
