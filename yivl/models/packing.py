"""Attention inputs for packed rows: several samples in one row, each attending only to itself.

A packed batch carries ``sequence_ids`` [B, T] next to ``input_ids``: the number of the sample each token
belongs to inside its row (0, 1, 2, ...; any value on padding). After splicing, every sample gets its own
position ids (restarting at 0) and a causal mask confined to its own tokens:

- sdpa: an explicit block-diagonal causal 4-D bool mask [B, 1, L, L];
- eager: the same mask as additive floats (eager attention adds the mask to the scores);
- flash_attention_2 and flex_attention: no mask, only the restarting position ids, from which
  transformers derives the sequence boundaries (cu_seqlens for FlashAttention-2, a block mask for flex).

Padding at the end of a row is its own block (attending only to padding), so no row of the mask is empty
(an all-masked row would turn into NaNs that poison the backward pass).
"""

from __future__ import annotations

import importlib.util

import torch

from yivl.constants import IMAGE_TOKEN_INDEX
from yivl.errors import YivlError

MASKED_BACKENDS = ("sdpa", "eager")
POSITION_BACKENDS = ("flash_attention_2", "flex_attention")


def spliced_sequence_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, sequence_ids: torch.Tensor, num_image_tokens: int
) -> torch.Tensor:
    """Sample numbers [B, T] of the input tokens -> [B, L] of the right-padded spliced rows (-1 on padding).

    Each image placeholder becomes ``num_image_tokens`` rows of its own sample, as in ``splice``.
    """
    real = attention_mask.bool()
    width = torch.where(input_ids == IMAGE_TOKEN_INDEX, num_image_tokens, 1) * real
    lengths = width.sum(1)
    total = int(lengths.max()) if lengths.numel() else 0
    flat = torch.repeat_interleave(sequence_ids[real], width[real])
    filled = torch.arange(total, device=input_ids.device)[None] < lengths[:, None]
    out = torch.full((input_ids.shape[0], total), -1, dtype=torch.long, device=input_ids.device)
    out[filled] = flat
    return out


def packed_position_ids(segments: torch.Tensor) -> torch.Tensor:
    """Position ids [B, L] that restart at 0 where the sample number in ``segments`` [B, L] changes."""
    length = segments.shape[1]
    pos = torch.arange(length, device=segments.device).expand_as(segments)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    first = torch.where(starts, pos, 0).cummax(1).values  # index where the current sample began
    return pos - first


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """Bool [B, 1, L, L]: query i sees key j iff j <= i and both belong to the same sample (or padding)."""
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]
    return (same & causal)[:, None]


def check_backend(attn_implementation: str) -> None:
    """Raise YivlError for a backend packing cannot use, or FlashAttention-2 without ``flash_attn``."""
    if attn_implementation not in MASKED_BACKENDS + POSITION_BACKENDS:
        raise YivlError(
            f"data.packing=true does not support attention {attn_implementation!r}; use one of "
            + ", ".join(MASKED_BACKENDS + POSITION_BACKENDS)
        )
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise YivlError(
            "data.packing=true with flash_attention_2 needs the flash_attn package; "
            "pip install flash-attn, or use model.attn_implementation=sdpa"
        )


def packed_attention(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    sequence_ids: torch.Tensor,
    num_image_tokens: int,
    attn_implementation: str,
    dtype: torch.dtype,
    padding_side: str = "right",
) -> dict[str, torch.Tensor | None]:
    """The LLM's ``attention_mask`` and ``position_ids`` for a packed, right-padded batch (see module doc);
    ``attention_mask`` [B, T] None means no padding."""
    if padding_side != "right":
        raise ValueError("packed batches are right-padded; padding_side must be 'right'")
    check_backend(attn_implementation)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    segments = spliced_sequence_ids(input_ids, attention_mask, sequence_ids, num_image_tokens)
    position_ids = packed_position_ids(segments)
    if attn_implementation in POSITION_BACKENDS:
        return {"attention_mask": None, "position_ids": position_ids}
    mask = block_causal_mask(segments)
    if attn_implementation == "eager":
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    return {"attention_mask": mask, "position_ids": position_ids}
