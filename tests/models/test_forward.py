"""YiVL forward: padding invariance, an independent reference computation, the loss, gradients."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from yivl.constants import IGNORE_INDEX as IGN
from yivl.constants import IMAGE_TOKEN_INDEX as IMG
from yivl.models.yivl import YiVL, module_groups

P = 64
ROWS = [[30, 31, IMG, 32, 33, 34], [40, 41, 42], [IMG, 50, 51, 52, 53, 54, 55, 56]]
IMAGE_OF = [0, None, 1]


def _pad(rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[r, cols], mask[r, cols] = torch.tensor(row), 1
    return ids, mask


def _single_logits(model, row: list[int], image: torch.Tensor | None) -> torch.Tensor:
    ids = torch.tensor([row])
    return model(ids, torch.ones_like(ids), pixel_values=image).logits[0]


@torch.no_grad()
def test_padded_batch_equals_unpadded_samples(tiny_model, images) -> None:
    for side in ("right", "left"):
        ids, mask = _pad(ROWS, side)
        out = tiny_model(ids, mask, pixel_values=images[:2], padding_side=side).logits
        width = out.shape[1]
        for b, row in enumerate(ROWS):
            k = IMAGE_OF[b]
            single = _single_logits(tiny_model, row, None if k is None else images[k : k + 1])
            n = single.shape[0]
            batched = out[b, :n] if side == "right" else out[b, width - n :]
            torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


@torch.no_grad()
def test_logits_equal_an_independent_computation(tiny_model, images) -> None:
    row = [30, 31, IMG, 32, 33]
    clip_out = tiny_model.vision_tower.clip(images[:1], output_hidden_states=True)
    patches = clip_out.hidden_states[-2][:, 1:]  # layer 1 of 2, CLS dropped
    assert patches.shape == (1, P, 64)
    features = tiny_model.mm_projector(patches)
    embed = tiny_model.llm.model.embed_tokens
    inputs = torch.cat([embed(torch.tensor([[30, 31]])), features, embed(torch.tensor([[32, 33]]))], dim=1)
    reference = tiny_model.llm(inputs_embeds=inputs).logits[0]
    ours = _single_logits(tiny_model, row, images[:1])
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def _labels(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Supervise the second half of each sample's text tokens."""
    labels = torch.full_like(ids, IGN)
    for b in range(ids.shape[0]):
        real = mask[b].nonzero().squeeze(1)
        tail = real[len(real) // 2 :]
        labels[b, tail] = ids[b, tail]
    return labels.masked_fill(ids == IMG, IGN)


def test_loss_equals_manual_cross_entropy(tiny_model, images) -> None:
    ids, mask = _pad(ROWS, "right")
    labels = _labels(ids, mask)
    with torch.no_grad():
        full = tiny_model(ids, mask, pixel_values=images[:2]).logits
        sp_labels = tiny_model.splice(ids, mask, labels, images[:2]).labels
        lean = tiny_model(ids, mask, labels, images[:2])
        wide = tiny_model(ids, mask, labels, images[:2], full_logits=True)
    shifted = sp_labels[:, 1:]
    manual = F.cross_entropy(full[:, :-1].reshape(-1, full.shape[-1]), shifted.reshape(-1), ignore_index=IGN)
    count = int((shifted != IGN).sum())
    assert int(lean.num_tokens) == int(wide.num_tokens) == count > 0
    torch.testing.assert_close(lean.loss, manual, rtol=0, atol=1e-5)
    torch.testing.assert_close(wide.loss, manual, rtol=0, atol=1e-5)
    assert lean.logits.shape == (count, full.shape[-1]) and wide.logits.shape == full.shape
    torch.testing.assert_close(lean.logits, full[:, :-1][shifted != IGN], rtol=0, atol=1e-5)


def test_no_supervised_tokens_gives_zero_loss(tiny_model) -> None:
    ids = torch.tensor([[5, 6, 7]])
    out = tiny_model(ids, torch.ones_like(ids), torch.full_like(ids, IGN))
    assert int(out.num_tokens) == 0 and out.loss.item() == 0.0


def test_gradients_reach_every_group(tiny_config, images) -> None:
    torch.manual_seed(0)
    model = YiVL(tiny_config)  # a fresh model: the shared fixture must keep no gradients
    ids, mask = _pad(ROWS, "right")
    model(ids, mask, _labels(ids, mask), images[:2]).loss.backward()
    for name, group in module_groups(model).items():
        grads = [p.grad for p in group.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name


def test_blank_image_reaches_the_tower_and_projector_with_an_exactly_zero_gradient(
    tiny_config, images
) -> None:
    """A text-only batch with ``blank_image`` gives the tower / projector parameters an image batch
    reaches an exactly zero gradient (so DDP, ZeRO and FSDP2 reduce the same parameters on every
    rank), with the loss and LLM gradients of the plain batch."""
    torch.manual_seed(0)
    model = YiVL(tiny_config)  # a fresh model: the shared fixture must keep no gradients

    def grads(rows: list[list[int]], pixels: torch.Tensor, blank: bool) -> tuple[torch.Tensor, dict]:
        model.zero_grad(set_to_none=True)
        ids, mask = _pad(rows, "right")
        out = model(ids, mask, _labels(ids, mask), pixels, blank_image=blank)
        out.loss.backward()
        return out.loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    text, no_images = [[40, 41, 42, 43], [50, 51, 52]], images[:0]
    _, with_image = grads([[30, IMG, 31, 32]], images[:1], False)
    plain_loss, plain = grads(text, no_images, False)
    blank_loss, blank = grads(text, no_images, True)
    assert torch.equal(blank_loss, plain_loss)
    vision = ("vision_tower.", "mm_projector.")
    reached = {n for n, g in with_image.items() if n.startswith(vision) and g is not None}
    assert reached and all(plain[n] is None for n in reached)
    assert {n for n, g in blank.items() if n.startswith(vision) and g is not None} == reached
    assert not any(blank[n].any() for n in reached)
    assert all(torch.equal(blank[n], g) for n, g in plain.items() if g is not None)


def test_module_groups_partition_the_parameters(tiny_model) -> None:
    groups = module_groups(tiny_model)
    assert list(groups) == ["vision_tower", "mm_projector", "llm"]
    ids = [id(p) for g in groups.values() for p in g.parameters()]
    assert sorted(ids) == sorted(id(p) for p in tiny_model.parameters())


@torch.no_grad()
def test_bf16_model_takes_fp32_pixels(tiny_model, images) -> None:
    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    ids = torch.tensor([[5, IMG, 6]])
    out = model(ids, torch.ones_like(ids), pixel_values=images[:1])
    assert out.logits.dtype == torch.bfloat16 and out.logits.shape == (1, 2 + P, 1024)
    reference = tiny_model(ids, torch.ones_like(ids), pixel_values=images[:1]).logits
    assert (out.logits.float() - reference).abs().max() < 0.1
