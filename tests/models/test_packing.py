"""Packed rows in the model: the same losses, logits and gradients as one sample per row, and no leakage."""

from __future__ import annotations

import pytest
import torch

from yivl.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from yivl.errors import YivlError
from yivl.models.packing import check_backend, packed_attention, packed_position_ids, spliced_sequence_ids
from yivl.models.yivl import YiVL

# (text tokens before the image or None for text-only, text tokens after): 5 samples, 2 with images
SHAPES = [(3, 9), (None, 12), (2, 6), (None, 5), (None, 17)]
ROWS = [[0, 1, 2], [3, 4]]  # which samples share a packed row


def make_sample(seed: int, shape: tuple[int | None, int], size: int) -> dict:
    """Random ids (one -200 when it has an image), the last half of the text supervised."""
    g = torch.Generator().manual_seed(seed)
    before, after = shape
    ids = torch.randint(3, 1000, (after,), generator=g)
    if before is not None:
        ids = torch.cat(
            [torch.randint(3, 1000, (before,), generator=g), torch.tensor([IMAGE_TOKEN_INDEX]), ids]
        )
    labels = torch.where(torch.arange(len(ids)) >= len(ids) - after // 2, ids, IGNORE_INDEX)
    pixels = torch.randn(int(before is not None), 3, size, size, generator=g)
    return {"ids": ids, "labels": labels, "pixels": pixels}


def pad_batch(rows: list[list[dict]]) -> dict[str, torch.Tensor]:
    """Each inner list concatenated into one right-padded row, with its sequence ids."""
    longest = max(sum(len(s["ids"]) for s in row) for row in rows)
    batch = {k: torch.zeros(len(rows), longest, dtype=torch.long) for k in ("input_ids", "attention_mask")}
    batch["labels"] = torch.full((len(rows), longest), IGNORE_INDEX)
    batch["sequence_ids"] = torch.full((len(rows), longest), -1)
    for r, row in enumerate(rows):
        at = 0
        for n, s in enumerate(row):
            span = slice(at, at + len(s["ids"]))
            batch["input_ids"][r, span], batch["labels"][r, span] = s["ids"], s["labels"]
            batch["attention_mask"][r, span], batch["sequence_ids"][r, span] = 1, n
            at += len(s["ids"])
    batch["pixel_values"] = torch.cat([s["pixels"] for row in rows for s in row])
    return batch


def per_sample_losses(model: YiVL, batch: dict, samples: list[dict], packed: bool) -> list[torch.Tensor]:
    """Each sample's mean CE, from the supervised logits (row-major = sample order in both layouts)."""
    out = model(**{k: v for k, v in batch.items() if packed or k != "sequence_ids"})
    counts = [int((s["labels"][1:] != IGNORE_INDEX).sum()) for s in samples]
    targets = torch.cat([s["labels"][1:][s["labels"][1:] != IGNORE_INDEX] for s in samples])
    ce = torch.nn.functional.cross_entropy(out.logits.float(), targets, reduction="none")
    return list(ce.split(counts)), out


@pytest.fixture
def samples(tiny_config) -> list[dict]:
    return [make_sample(i, shape, tiny_config.image_size) for i, shape in enumerate(SHAPES)]


def grads(model: YiVL, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_packed_equals_unpacked_losses_and_gradients(tiny_config, samples, backend):
    torch.manual_seed(0)
    model = YiVL(tiny_config, attn_implementation=backend)
    packed = pad_batch([[samples[i] for i in row] for row in ROWS])
    order = [samples[i] for row in ROWS for i in row]
    plain = pad_batch([[s] for s in order])
    p_losses, p_out = per_sample_losses(model, packed, order, packed=True)
    u_losses, u_out = per_sample_losses(model, plain, order, packed=False)
    for p, u in zip(p_losses, u_losses, strict=True):
        torch.testing.assert_close(p, u, atol=1e-5, rtol=0)
    assert int(p_out.num_tokens) == int(u_out.num_tokens) == sum(len(x) for x in u_losses)
    g_packed, g_plain = grads(model, p_out.loss), grads(model, u_out.loss)
    assert g_packed.keys() == g_plain.keys() and len(g_packed) > 20
    for name in g_plain:
        torch.testing.assert_close(g_packed[name], g_plain[name], atol=1e-5, rtol=0, msg=name)


def test_transformers_position_id_packing_matches_the_explicit_mask(tiny_config, samples):
    """The path FlashAttention-2 and flex take (no mask, restarting position ids, from which transformers
    finds the sequences) gives the logits of the explicit block-diagonal mask."""
    torch.manual_seed(0)
    model = YiVL(tiny_config)
    batch = pad_batch([[samples[i] for i in row] for row in ROWS])
    batch.pop("labels")
    explicit = model(**batch).logits
    sp = model.splice(batch["input_ids"], batch["attention_mask"], None, batch["pixel_values"])
    segments = spliced_sequence_ids(
        batch["input_ids"], batch["attention_mask"], batch["sequence_ids"], tiny_config.num_image_tokens
    )
    derived = model.llm(
        inputs_embeds=sp.inputs_embeds, position_ids=packed_position_ids(segments), use_cache=False
    ).logits
    torch.testing.assert_close(derived, explicit, atol=1e-5, rtol=0)


def test_changing_one_sample_changes_no_other_sample(tiny_config, samples):
    torch.manual_seed(0)
    model = YiVL(tiny_config)
    other = make_sample(99, SHAPES[1], tiny_config.image_size)
    other["ids"][:4] = torch.tensor([7, 8, 9, 10])
    runs = []
    for middle in (samples[1], other):
        row = [samples[0], middle, samples[2]]
        losses, _ = per_sample_losses(model, pad_batch([row]), row, packed=True)
        runs.append([losses[0].mean(), losses[1].mean(), losses[2].mean()])
    assert not torch.allclose(runs[0][1], runs[1][1])  # the changed sample itself does change
    for k in (0, 2):
        torch.testing.assert_close(runs[0][k], runs[1][k], atol=1e-6, rtol=0)
        g0, g1 = grads(model, runs[0][k]), grads(model, runs[1][k])
        for name in g0:
            torch.testing.assert_close(g0[name], g1[name], atol=1e-6, rtol=0, msg=name)


def test_position_ids_restart_and_images_land_in_their_own_sample(tiny_config, samples):
    rows = tiny_config.num_image_tokens
    batch = pad_batch([[samples[i] for i in row] for row in ROWS])
    segments = spliced_sequence_ids(batch["input_ids"], batch["attention_mask"], batch["sequence_ids"], rows)
    lengths = [
        [len(samples[i]["ids"]) + (rows - 1) * samples[i]["pixels"].shape[0] for i in row] for row in ROWS
    ]
    expected_pos = [torch.cat([torch.arange(n) for n in row]) for row in lengths]
    for r, row in enumerate(lengths):
        assert segments[r, : sum(row)].tolist() == [n for n, k in enumerate(row) for _ in range(k)]
        assert (segments[r, sum(row) :] == -1).all()
        assert packed_position_ids(segments)[r, : sum(row)].tolist() == expected_pos[r].tolist()
    # the spliced rows of sample 2 (the second image) hold exactly that image's projected features
    model = YiVL(tiny_config).eval()
    sp = model.splice(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"])
    features = model.encode_images(batch["pixel_values"])
    for image, (r, n) in enumerate([(0, 0), (0, 2)]):
        before = SHAPES[ROWS[r][n]][0]
        start = sum(lengths[r][:n]) + before
        assert (segments[r, start : start + rows] == n).all()
        torch.testing.assert_close(sp.inputs_embeds[r, start : start + rows], features[image])


def test_backends_packing_cannot_use_are_refused_in_one_line():
    with pytest.raises(
        YivlError, match=r"^data.packing=true does not support attention 'paged'; use one of "
    ):
        check_backend("paged")
    with pytest.raises(YivlError) as err:
        check_backend("flash_attention_2")
    assert str(err.value) == (
        "data.packing=true with flash_attention_2 needs the flash_attn package; "
        "pip install flash-attn, or use model.attn_implementation=sdpa"
    )


def test_packed_batches_must_be_right_padded() -> None:
    ids = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^packed batches are right-padded; padding_side must be 'right'$"):
        packed_attention(ids, None, torch.zeros_like(ids), 4, "sdpa", torch.float32, padding_side="left")
    out = packed_attention(ids, None, torch.tensor([[0, 0, 1, 1]]), 4, "sdpa", torch.float32)
    assert out["position_ids"].tolist() == [[0, 1, 0, 1]]
    assert out["attention_mask"][0, 0].int().tolist() == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 1, 1],
    ]
