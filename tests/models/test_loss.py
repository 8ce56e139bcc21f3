"""Chunked cross-entropy: the same loss and gradients as the supervised-only head, chunk by chunk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yivl.constants import IGNORE_INDEX
from yivl.models.config import YiVLConfig
from yivl.models.loss import chunked_cross_entropy
from yivl.models.yivl import YiVL

TOL = 1e-6


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_cross_entropy_equals_full_in_loss_and_gradients(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    head = nn.Linear(32, 500, bias=False)
    nn.init.normal_(head.weight, std=0.02, generator=gen)  # Llama's initializer_range
    hidden = torch.randn(93, 32, generator=gen, requires_grad=True)
    targets = torch.randint(0, 500, (93,), generator=gen)

    full = F.cross_entropy(head(hidden).float(), targets, reduction="sum") / 93  # the token mean
    full.backward()
    want = (head.weight.grad.clone(), hidden.grad.clone())
    head.weight.grad, hidden.grad = None, None

    chunked = chunked_cross_entropy(head, hidden, targets, chunk) / 93
    chunked.backward()
    assert abs(float(chunked.detach()) - float(full.detach())) < TOL
    assert float((head.weight.grad - want[0]).abs().max()) < TOL
    assert float((hidden.grad - want[1]).abs().max()) < TOL


def test_yivl_chunked_loss_gives_the_loss_and_gradients_of_the_supervised_head(
    tiny_config: YiVLConfig, images: torch.Tensor
) -> None:
    torch.manual_seed(0)
    model = YiVL(tiny_config).train()
    ids = torch.randint(3, tiny_config.llm["vocab_size"], (2, 12))
    ids[0, 2] = ids[1, 5] = -200
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    labels[ids == -200] = IGNORE_INDEX
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    labels[1, 10:] = IGNORE_INDEX

    def run(chunk: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        out = model(ids, mask, labels, images[:2], loss_chunk_size=chunk)
        out.loss.backward()
        return out.loss.detach(), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }

    (loss, grads), (chunked, chunked_grads) = run(0), run(3)
    assert abs(float(loss - chunked)) < TOL
    assert sorted(grads) == sorted(chunked_grads)
    assert max(float((grads[n] - chunked_grads[n]).abs().max()) for n in grads) < TOL
