"""The training loss: summed cross-entropy over the supervised positions, optionally in chunks.

``supervised_loss`` runs the LM head only where a label is supervised (``logits_to_keep``). With a chunk
size it goes further: the head and the fp32 cross-entropy run on ``chunk_size`` supervised positions at
a time, so peak memory holds one chunk's logits (and their gradient) instead of all of them.

A plain ``nn.Linear`` head (the Llama head under every finetune method: LoRA and QLoRA leave it out)
goes through ``yivl.models.fused_ce``, which takes each chunk's gradients in the forward: no extra
matmul. Any other head is called as a module, each chunk under ``torch.utils.checkpoint`` so its logits
are freed after its loss is taken and recomputed in the backward (one more head matmul per position):
a LoRA-wrapped or quantized head, and a head whose weight is not all in this process or is gathered in
a forward hook (ZeRO-3 registers one on every module; FSDP2 has already gathered the head's weight,
which belongs to the root's parameter group, before ``YiVL.forward`` runs, and would only leave a
``DTensor`` shard if the head were sharded on its own). An fp16 head also takes the module path: the
fused gradients are unscaled (GradScaler scales only the loss) and fp16 would round the small
probabilities in them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint

from yivl.constants import IGNORE_INDEX
from yivl.models.fused_ce import compute_dtype, fused_linear_cross_entropy


def supervised_mask(labels: torch.Tensor) -> torch.Tensor:
    """Where the shifted labels of ``labels`` [B, T] are supervised (not -100): bool [B, T - 1]."""
    return labels[:, 1:] != IGNORE_INDEX


def supervised_count(labels: torch.Tensor) -> torch.Tensor:
    """Supervised (shifted, non -100) labels of ``labels`` [B, T]: 0-dim long tensor.

    The same count on labels before or after image splicing (image positions are -100)."""
    return supervised_mask(labels).sum()


def _chunk_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def fusable(head: nn.Module) -> bool:
    """True for a head ``fused_linear_cross_entropy`` can read directly (see the module docstring)."""
    if type(head) is not nn.Linear or head._forward_hooks or head._forward_pre_hooks:
        return False
    weight = head.weight
    sharded = isinstance(weight, DTensor) or hasattr(weight, "ds_id")  # FSDP2 shard / ZeRO-3 partition
    return not sharded and compute_dtype(weight) != torch.float16


def chunked_cross_entropy(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Summed CE of ``head(hidden)`` [n, V] against ``targets`` [n], ``chunk_size`` rows at a time.

    ``hidden``: [n, H] final hidden states of the supervised positions. fp32 0-dim result."""
    if fusable(head):
        return fused_linear_cross_entropy(hidden, head.weight, head.bias, targets, chunk_size)
    return recomputed_cross_entropy(head, hidden, targets, chunk_size)


def recomputed_cross_entropy(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """``chunked_cross_entropy`` through module calls, each chunk's logits recomputed in the backward."""
    parts = [
        checkpoint(
            _chunk_loss, head, hidden[i : i + chunk_size], targets[i : i + chunk_size], use_reentrant=False
        )
        for i in range(0, hidden.shape[0], chunk_size)
    ]
    if not parts:  # no supervised position: a zero that still depends on the head, like the full CE
        return F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    return torch.stack(parts).sum()  # pairwise summation: as exact as one CE over all rows


def supervised_loss(
    llm: nn.Module,
    llm_inputs: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    full_logits: bool = False,
    chunk_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(summed CE, logits, supervised count) of a ``LlamaForCausalLM`` on spliced inputs.

    ``labels`` [B, L] are aligned with the inputs (-100 = ignore). Logits: [B, L, V] with ``full_logits``;
    else [n, V] at the supervised positions (row-major); None when the loss is chunked (``chunk_size`` > 0
    and not ``full_logits``), which never holds all of them at once."""
    targets, supervised = labels[:, 1:], supervised_mask(labels)
    num_tokens = supervised.sum()
    if full_logits:
        logits = llm(**llm_inputs, use_cache=False).logits
        picked = logits[:, :-1][supervised]
    elif chunk_size > 0:
        hidden = llm.model(**llm_inputs, use_cache=False).last_hidden_state[:, :-1][supervised]
        loss_sum = chunked_cross_entropy(llm.lm_head, hidden, targets[supervised], chunk_size)
        return loss_sum, None, num_tokens
    else:
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = supervised
        logits = picked = llm(**llm_inputs, use_cache=False, logits_to_keep=keep).logits
    loss_sum = F.cross_entropy(picked.float(), targets[supervised], reduction="sum")
    return loss_sum, logits, num_tokens
