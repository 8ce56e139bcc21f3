"""Fused linear cross-entropy: the LM head's summed CE and its gradients in one pass, chunk by chunk.

For each chunk of supervised hidden states ``h`` [n, H] the forward takes the logits ``h W^T + b`` in the
head's compute dtype, upcasts them to fp32 for the cross-entropy, turns them in place into
``softmax - onehot`` (the gradient of the summed CE with respect to the logits), and from it the
chunk's hidden-state gradient (``g W``) and, for a trained head, the weight and bias gradients
(``g^T h``, ``sum g``); then the chunk's logits are freed. The backward only scales the stored
gradients by its incoming scalar. That is the same matmuls as the unchunked head's forward and
backward (two with a frozen head, three with a trained one) with one chunk's logits alive at a time.

The matmuls run where the head's forward would: in the autocast dtype under autocast, else in the
weight's dtype; gradients come back in the dtype of their input. A trained head's weight gradient is
summed over the chunks in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yivl.constants import IGNORE_INDEX


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: autocast's where autocast is on, else the weight's."""
    device = weight.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(h, weight, bias).float()


def _loss_and_grad_logits(
    logits: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed CE, its gradient w.r.t. the logits in ``dtype``) of fp32 ``logits`` [n, V]; overwrites them."""
    loss = F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE_INDEX)
    kept = targets != IGNORE_INDEX
    probs = logits.sub_(torch.logsumexp(logits, -1, keepdim=True)).exp_()  # softmax, in place
    probs.scatter_add_(1, targets.where(kept, 0)[:, None], -kept[:, None].to(probs.dtype))
    probs.mul_(kept[:, None])  # ignored rows get no gradient, as in the unchunked CE
    return loss, probs.to(dtype)


def _zeros32(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float32, device=like.device)


def _loss_and_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int,
    dtype: torch.dtype,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """(summed CE, [grad hidden, grad weight, grad bias]) for a loss gradient of 1; None where not needed.

    The matmuls run in ``dtype``."""
    w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
    grad_hidden = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if needs[0] else None
    grad_weight = _zeros32(weight.shape, weight) if needs[1] else None
    grad_bias = _zeros32(weight.shape[:1], weight) if needs[2] else None
    losses = []
    for start in range(0, hidden.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        h = hidden[rows].to(dtype)
        loss, g = _loss_and_grad_logits(_chunk_logits(h, w, b), targets[rows], dtype)
        losses.append(loss)
        if grad_hidden is not None:
            torch.mm(g, w, out=grad_hidden[rows])
        if grad_weight is not None and dtype == torch.float32:
            grad_weight.addmm_(g.T, h)
        elif grad_weight is not None:
            grad_weight += g.T @ h  # a bf16 chunk product, summed in fp32
        if grad_bias is not None:
            grad_bias += g.sum(0)
    total = torch.stack(losses).sum() if losses else _zeros32(torch.Size(), hidden)
    return total, [grad_hidden, grad_weight, grad_bias]  # pairwise sum: as exact as one CE over all rows


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Summed CE of ``hidden W^T + bias`` against ``targets``; gradients computed in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):
        dtype, needs = compute_dtype(weight), ctx.needs_input_grad[:3]
        with torch.autocast(weight.device.type, enabled=False):  # the dtype is set, as autocast would
            loss, grads = _loss_and_grads(hidden, weight, bias, targets, chunk_size, dtype, needs)
        ctx.save_for_backward(*grads)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        # Scaled in place: each stored gradient is used once (a second backward fails on its version).
        grads = [
            None if g is None else g.mul_(grad_loss).to(dtype)
            for g, dtype in zip(ctx.saved_tensors, ctx.dtypes, strict=True)
        ]
        return (*grads, None, None)


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """Summed CE of ``hidden`` [n, H] @ ``weight`` [V, H]^T (+ ``bias`` [V]) against ``targets`` [n].

    ``chunk_size`` rows at a time; -100 targets are ignored. fp32 0-dim result. Without autograd (no
    grad mode, or nothing requiring a gradient) only the loss is computed, still chunk by chunk."""
    tensors = (hidden, weight) if bias is None else (hidden, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _FusedLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_size)
    with torch.no_grad():
        parts = [
            F.cross_entropy(
                _chunk_logits(hidden[i : i + chunk_size], weight, bias),
                targets[i : i + chunk_size],
                reduction="sum",
                ignore_index=IGNORE_INDEX,
            )
            for i in range(0, hidden.shape[0], chunk_size)
        ]
    return torch.stack(parts).sum() if parts else torch.zeros((), device=hidden.device)
