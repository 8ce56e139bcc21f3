"""Summed log-probabilities of the supervised tokens of each sequence: the ``loss`` task and MCQ by
likelihood. Sums are accumulated per sample in float64, so the token-weighted NLL of a dataset does not
depend on the batch size or the padding side (beyond float32 rounding inside the model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from yivl.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX
from yivl.data.chat import tokenize_prompt
from yivl.data.tokenizer import YiTokenizer
from yivl.models.yivl import YiVL


def pad_sequences(
    sequences: Sequence[tuple[list[int], list[int]]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, labels) pairs -> input_ids, attention_mask, labels [B, T], padded on ``side``."""
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(sequences):
        cols = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
        input_ids[row, cols] = torch.tensor(ids, dtype=torch.long)
        labels[row, cols] = torch.tensor(labs, dtype=torch.long)
        mask[row, cols] = 1
    return input_ids, mask, labels


@torch.inference_mode()
def sequence_logprobs(
    model: YiVL,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    pixel_values: torch.Tensor | None,
    padding_side: str = "right",
) -> tuple[list[float], list[int]]:
    """Per row: the summed log-probability of its supervised labels and their number.

    ``input_ids``/``attention_mask``/``labels`` [B, T] (-100 = not scored, -200 = image);
    ``pixel_values`` [N, 3, S, S], one per -200 in row-major order. Same masking and shift as
    ``YiVL.forward``, whose loss is ``-sum(sums) / sum(counts)``.
    """
    device = model.llm.get_input_embeddings().weight.device
    if pixel_values is not None and pixel_values.shape[0] == 0:
        pixel_values = None
    if pixel_values is not None:
        pixel_values = pixel_values.to(device, next(model.vision_tower.parameters()).dtype)
    sp = model.splice(
        input_ids.to(device), attention_mask.to(device), labels.to(device), pixel_values, padding_side
    )
    targets = sp.labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    keep = torch.zeros_like(sp.labels, dtype=torch.bool)
    keep[:, :-1] = supervised
    logits = model.llm(
        inputs_embeds=sp.inputs_embeds,
        attention_mask=sp.attention_mask,
        position_ids=sp.position_ids,
        use_cache=False,
        logits_to_keep=keep,
    ).logits  # [num_supervised, V] in row-major order
    logprobs = -F.cross_entropy(logits.float(), targets[supervised], reduction="none")
    rows = supervised.nonzero()[:, 0]
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float64, device=device)
    sums.index_add_(0, rows, logprobs.double())
    counts = supervised.sum(1)
    return sums.tolist(), counts.tolist()


def continuation_sequence(
    tokenizer: YiTokenizer, prompt: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Ids and labels of ``prompt + " " + continuation`` tokenised jointly; only the continuation is scored.

    The boundary is found by character offsets: a token that starts at or after the prompt's end, or
    that straddles it, belongs to the continuation.
    """
    head, _, tail = prompt.rpartition(IMAGE_PLACEHOLDER)
    prefix_ids = [*tokenize_prompt(tokenizer, head), IMAGE_TOKEN_INDEX] if IMAGE_PLACEHOLDER in prompt else []
    text = tail + " " + continuation
    ids, spans = tokenizer.encode_with_spans(text)
    boundary = len(tail)
    labels = [tok if end > boundary else IGNORE_INDEX for tok, (_, end) in zip(ids, spans, strict=True)]
    return prefix_ids + ids, [IGNORE_INDEX] * len(prefix_ids) + labels
