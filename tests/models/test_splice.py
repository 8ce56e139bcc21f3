"""Splicing: image features land exactly at their -200, labels are -100 there, padding on either side."""

from __future__ import annotations

import pytest
import torch

from yivl.constants import IGNORE_INDEX as IGN
from yivl.constants import IMAGE_TOKEN_INDEX as IMG
from yivl.errors import YivlError

P = 64  # image tokens of the tiny preset


def _batch(rows: list[list[int]], side: str = "right", pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to ids [B, T] and mask [B, T] on ``side``."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[r, cols] = torch.tensor(row)
        mask[r, cols] = 1
    return ids, mask


def _expected_rows(model, row: list[int], features: list[torch.Tensor]) -> torch.Tensor:
    """The spliced embeddings of one sample built by hand: token embeddings, image k's rows at its -200."""
    embed = model.llm.get_input_embeddings()
    parts, feats = [], iter(features)
    for t in row:
        parts.append(next(feats) if t == IMG else embed(torch.tensor([t])))
    return torch.cat(parts)


@torch.no_grad()
def test_single_sample_positions_and_labels(tiny_model, images) -> None:
    ids = torch.tensor([[5, 6, IMG, 7, 8]])
    labels = torch.tensor([[IGN, IGN, IGN, 7, 8]])
    sp = tiny_model.splice(ids, torch.ones_like(ids), labels, images[:1])
    feats = tiny_model.encode_images(images[:1])[0]
    embed = tiny_model.llm.get_input_embeddings()
    assert sp.inputs_embeds.shape == (1, 4 + P, 128)
    torch.testing.assert_close(sp.inputs_embeds[0, :2], embed(torch.tensor([5, 6])), rtol=0, atol=0)
    torch.testing.assert_close(sp.inputs_embeds[0, 2 : 2 + P], feats, rtol=0, atol=0)
    torch.testing.assert_close(sp.inputs_embeds[0, 2 + P :], embed(torch.tensor([7, 8])), rtol=0, atol=0)
    assert sp.labels[0].tolist() == [IGN] * (2 + P) + [7, 8]
    assert sp.position_ids[0].tolist() == list(range(4 + P))
    assert sp.attention_mask.all()


@pytest.mark.parametrize("out_side", ["right", "left"])
@pytest.mark.parametrize("in_side", ["right", "left"])
@torch.no_grad()
def test_mixed_batch_with_padding(tiny_model, images, in_side: str, out_side: str) -> None:
    rows = [[9, 10, 11], [IMG, 12, 13], [14, 15, 16, 17, 18, 19], [20, IMG, 21, IMG, 22]]
    ids, mask = _batch(rows, in_side, pad_id=IMG)  # pad ids are ignored, even -200
    labels = torch.where(ids == IMG, IGN, ids + 1000) * mask + IGN * (1 - mask)
    sp = tiny_model.splice(ids, mask, labels, images[:3], padding_side=out_side)
    feats = list(tiny_model.encode_images(images[:3]))
    lengths = [len(r) + (P - 1) * r.count(IMG) for r in rows]
    width = max(lengths)
    assert sp.inputs_embeds.shape[:2] == (4, width)
    images_of = [[], [feats[0]], [], [feats[1], feats[2]]]  # image k goes to the k-th -200, row-major
    for b, row in enumerate(rows):
        n = lengths[b]
        real = slice(0, n) if out_side == "right" else slice(width - n, width)
        pads = torch.ones(width, dtype=torch.bool)
        pads[real] = False
        torch.testing.assert_close(sp.inputs_embeds[b, real], _expected_rows(tiny_model, row, images_of[b]))
        assert sp.attention_mask[b, real].all() and not sp.attention_mask[b, pads].any()
        assert sp.position_ids[b, real].tolist() == list(range(n))
        assert (sp.labels[b, pads] == IGN).all() and (sp.inputs_embeds[b, pads] == 0).all()
        expected_labels = []
        for t in row:
            expected_labels += [IGN] * P if t == IMG else [t + 1000]
        assert sp.labels[b, real].tolist() == expected_labels


def test_text_only_batch_needs_no_image(tiny_model) -> None:
    ids = torch.tensor([[5, 6, 7]])
    sp = tiny_model.splice(ids, torch.ones_like(ids))
    assert sp.inputs_embeds.shape == (1, 3, 128) and sp.labels is None


@pytest.mark.parametrize("num_images", [0, 2])
def test_image_count_mismatch_is_an_error(tiny_model, images, num_images: int) -> None:
    ids = torch.tensor([[5, IMG, 7]])
    pixels = images[:num_images] if num_images else None
    with pytest.raises(YivlError, match=f"1 image placeholder.*but {num_images} image"):
        tiny_model.splice(ids, torch.ones_like(ids), pixel_values=pixels)
