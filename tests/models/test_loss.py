"""Chunked cross-entropy: the same loss and gradients as the supervised-only head, chunk by chunk.

A plain ``nn.Linear`` head takes the fused path (gradients in the forward); LoRA-wrapped, quantized,
hooked (ZeRO-3) and fp16 heads take the module path (logits recomputed in the backward)."""

from __future__ import annotations

from collections.abc import Callable

import bitsandbytes as bnb
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from yivl.constants import IGNORE_INDEX
from yivl.models.config import YiVLConfig
from yivl.models.lora import add_lora
from yivl.models.loss import chunked_cross_entropy, fusable
from yivl.models.yivl import YiVL

TOL = 1e-6
ROWS, HIDDEN, VOCAB = 93, 32, 500


class Holder(nn.Module):
    """A module around a head, for peft to wrap it."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head


def random_head(bias: bool = False) -> nn.Linear:
    gen = torch.Generator().manual_seed(0)
    head = nn.Linear(HIDDEN, VOCAB, bias=bias)
    nn.init.normal_(head.weight, std=0.02, generator=gen)  # Llama's initializer_range
    if bias:
        nn.init.normal_(head.bias, std=0.5, generator=gen)
    return head


def random_rows(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden [ROWS, HIDDEN] requiring grad, targets [ROWS] with a few -100)."""
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(ROWS, HIDDEN, generator=gen).to(dtype).requires_grad_()
    targets = torch.randint(0, VOCAB, (ROWS,), generator=gen)
    targets[[3, 40, 41, 92]] = IGNORE_INDEX
    return hidden, targets


def loss_and_grads(
    loss_fn: Callable[[], torch.Tensor], tensors: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss / ROWS, the gradients of ``tensors`` that get one), clearing them afterwards."""
    loss = loss_fn() / ROWS  # the token mean: the backward scales the stored gradients
    loss.backward()
    grads = {n: t.grad.clone() for n, t in tensors.items() if t.grad is not None}
    for t in tensors.values():
        t.grad = None
    return loss.detach(), grads


def assert_same(
    got: tuple[torch.Tensor, dict[str, torch.Tensor]],
    want: tuple[torch.Tensor, dict[str, torch.Tensor]],
    tol: float = TOL,
) -> None:
    assert abs(float(got[0]) - float(want[0])) < tol
    assert sorted(got[1]) == sorted(want[1])
    for name, grad in want[1].items():
        assert got[1][name].dtype == grad.dtype, name
        assert float((got[1][name].float() - grad.float()).abs().max()) < tol, name


def full_head(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """What ``supervised_loss`` does without chunks: the head over every row, one fp32 CE."""
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize(("train_head", "bias"), [(False, False), (True, False), (True, True)])
def test_fused_chunks_equal_the_full_head_in_loss_and_gradients(
    chunk: int, train_head: bool, bias: bool
) -> None:
    head = random_head(bias).requires_grad_(train_head)
    hidden, targets = random_rows()
    tensors = {"hidden": hidden, **dict(head.named_parameters())}
    assert fusable(head)
    want = loss_and_grads(lambda: full_head(head, hidden, targets), tensors)
    got = loss_and_grads(lambda: chunked_cross_entropy(head, hidden, targets, chunk), tensors)
    assert sorted(want[1]) == (
        ["bias", "hidden", "weight"] if bias else ["hidden", "weight"][: 1 + train_head]
    )
    assert_same(got, want)


def test_fused_chunks_without_autograd_give_the_loss_alone() -> None:
    head, (hidden, targets) = random_head(), random_rows()
    want = full_head(head, hidden, targets).detach()
    with torch.no_grad():
        got = chunked_cross_entropy(head, hidden, targets, 7)
    assert not got.requires_grad
    assert abs(float(got) - float(want)) < TOL * ROWS


def test_fused_chunks_of_no_row_give_zero_and_zero_gradients() -> None:
    head, hidden = random_head(), torch.zeros(0, HIDDEN, requires_grad=True)
    loss = chunked_cross_entropy(head, hidden, torch.zeros(0, dtype=torch.long), 8)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(head.weight.grad.abs().max()) == 0.0
    assert hidden.grad.shape == (0, HIDDEN)


def test_fused_chunks_refuse_a_second_backward() -> None:
    head, (hidden, targets) = random_head(), random_rows()
    loss = chunked_cross_entropy(head, hidden, targets, 7)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_chunks_in_bf16_match_the_full_head_and_return_the_input_dtypes(autocast: bool) -> None:
    """bf16 weights, or fp32 weights under bf16 autocast (matmuls in bf16, the CE in fp32)."""
    dtype = torch.float32 if autocast else torch.bfloat16
    head, (hidden, targets) = random_head().to(dtype), random_rows(dtype)
    tensors = {"hidden": hidden, "weight": head.weight}

    def run(loss_fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return loss_and_grads(loss_fn, tensors)

    want = run(lambda: full_head(head, hidden, targets))
    got = run(lambda: chunked_cross_entropy(head, hidden, targets, 16))
    assert {g.dtype for g in got[1].values()} == {dtype}
    scale = max(float(g.abs().max()) for g in want[1].values())
    assert_same(got, want, tol=0.02 * scale)  # bf16 rounds the softmax gradient (2^-8) before the scale


def lora_head() -> nn.Module:
    holder = Holder(random_head())
    inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=8, target_modules=["head"], init_lora_weights=False), holder
    )
    return holder.head


def four_bit_head() -> nn.Module:
    old = random_head()
    new = bnb.nn.Linear4bit(HIDDEN, VOCAB, bias=False, compute_dtype=torch.float32, device="meta")
    new.weight = bnb.nn.Params4bit(old.weight.data, requires_grad=False, quant_type="nf4", module=new)
    return new.to("cpu")  # quantizes


def hooked_head() -> nn.Module:
    head = random_head()
    head.calls = 0

    def count(module: nn.Module, args: tuple) -> None:  # stands for ZeRO-3's gather-on-forward hook
        module.calls += 1

    head.register_forward_pre_hook(count)
    return head


def half_head() -> nn.Module:
    return random_head().half()


@pytest.mark.parametrize("make_head", [lora_head, four_bit_head, hooked_head, half_head])
def test_wrapped_quantized_hooked_and_fp16_heads_are_called_as_modules_with_the_same_values(
    make_head: Callable[[], nn.Module],
) -> None:
    head = make_head()
    dtype = torch.float16 if make_head is half_head else torch.float32
    hidden, targets = random_rows(dtype)
    tensors = {"hidden": hidden, **{n: p for n, p in head.named_parameters() if p.requires_grad}}
    assert not fusable(head)
    want = loss_and_grads(lambda: full_head(head, hidden, targets), tensors)
    got = loss_and_grads(lambda: chunked_cross_entropy(head, hidden, targets, 10), tensors)
    assert_same(got, want, tol=TOL if dtype == torch.float32 else 1e-3)
    if make_head is hooked_head:
        assert head.calls == 1 + 10 + 10  # the full head, then 10 chunks in the forward and the backward


def test_a_partitioned_weight_is_not_read_directly() -> None:
    head = random_head()
    head.weight.ds_id = 0  # what ZeRO-3 puts on each partitioned parameter
    assert not fusable(head)


@pytest.mark.parametrize("trains", ["all", "all but the head", "lora"])
def test_yivl_chunked_loss_gives_the_loss_and_gradients_of_the_supervised_head(
    tiny_config: YiVLConfig, images: torch.Tensor, trains: str
) -> None:
    torch.manual_seed(0)
    model = YiVL(tiny_config).train()
    if trains == "all but the head":
        model.llm.lm_head.requires_grad_(False)
    elif trains == "lora":  # the head stays a plain, frozen nn.Linear (LoRA and QLoRA leave it out)
        add_lora(model.llm, {"r": 4, "alpha": 8, "dropout": 0.0})
    assert fusable(model.llm.lm_head)
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
    assert ("llm.lm_head.weight" in grads) == (trains == "all")
    assert max(float((grads[n] - chunked_grads[n]).abs().max()) for n in grads) < TOL
