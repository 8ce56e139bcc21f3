"""Generation prefills the prompts' shared text prefix once and gets the same answers as without it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from yivl.constants import IMAGE_TOKEN_INDEX as IMG
from yivl.errors import YivlError
from yivl.models import generation
from yivl.models.generation import GenerationSettings, generate_full, shared_prefix_length


class IdTokenizer:
    """Decodes every id to "<id>", so answers compare token by token."""

    pad_token_id = 0

    def __init__(self, eos_token_id: int = -1) -> None:
        self.eos_token_id = eos_token_id

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"<{i}>" for i in ids)


def _prompts(images: torch.Tensor) -> tuple[list[int], list[list[int]], list[torch.Tensor | None]]:
    """A 24-token system prompt, then suffixes of mixed lengths that differ from their first token on."""
    g = torch.Generator().manual_seed(5)
    system = torch.randint(3, 1024, (24,), generator=g).tolist()
    suffixes = [[IMG, 7, 8, 9], [10, 11], [12, IMG, 13, 14, 15, 16, 17, 18, 19], [20, 21, 22, 23, IMG]]
    return system, [system + s for s in suffixes], [images[0], None, images[1], images[2]]


def _run(model, prompts, imgs, eos: int, monkeypatch, use_prefix: bool):
    """Answers, the shapes [rows, positions] of the LLM calls' inputs and their last logits [rows, V]."""
    monkeypatch.setattr(generation, "MIN_SHARED_PREFIX", 16 if use_prefix else 10**9)
    shapes: list[tuple[int, int]] = []
    logits: list[torch.Tensor] = []
    pre = model.llm.register_forward_pre_hook(
        lambda _m, _a, kw: shapes.append(tuple(kw["inputs_embeds"].shape[:2])), with_kwargs=True
    )
    post = model.llm.register_forward_hook(lambda _m, _a, out: logits.append(out.logits[:, -1]))
    try:
        settings = GenerationSettings(temperature=0, max_new_tokens=12, stop=())
        out = generate_full(model, IdTokenizer(eos), prompts, imgs, settings)
    finally:
        pre.remove()
        post.remove()
    return [(g.text, g.num_tokens, g.finish_reason) for g in out], shapes, logits


def test_shared_prefix_is_prefilled_once_and_answers_do_not_change(tiny_model, images, monkeypatch) -> None:
    system, prompts, imgs = _prompts(images)
    old, old_shapes, _ = _run(tiny_model, prompts, imgs, -1, monkeypatch, use_prefix=False)
    assert old_shapes[0][0] == len(prompts)  # today's path: whole prompts in one batched prefill
    # make row 0 end early at a token it first emits at step >= 3, so rows drop out of the reused cache
    ids = [int(t) for t in old[0][0][1:-1].split("><")]
    eos = next(t for i, t in enumerate(ids) if i >= 3 and t not in ids[:i])
    old, _, old_logits = _run(tiny_model, prompts, imgs, eos, monkeypatch, use_prefix=False)
    new, shapes, new_logits = _run(tiny_model, prompts, imgs, eos, monkeypatch, use_prefix=True)
    assert shapes[0] == (1, len(system))  # the system prompt, once
    assert shapes[1] == (len(prompts), old_shapes[0][1] - len(system))  # then only the suffixes
    assert new == old
    assert len(new_logits) == len(old_logits) + 1  # the prefix call, then the same steps
    for a, b in zip(old_logits, new_logits[1:], strict=True):  # positions and masks line up: same logits
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert new[0][2] == "stop" and any(reason == "length" for _, _, reason in new[1:])
    singles = [
        _run(tiny_model, [p], [im], eos, monkeypatch, True)[0][0] for p, im in zip(prompts, imgs, strict=True)
    ]
    assert new == singles


def test_shared_prefix_length_stops_at_images_and_leaves_a_token() -> None:
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert shared_prefix_length([[1, 2, IMG, 4], [1, 2, IMG, 4]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix_length([[1, 2], [3, 2]]) == 0


def test_context_check_counts_the_shared_prefix(tiny_model) -> None:
    prompts = [[7] * 20, [7] * 4096]
    with pytest.raises(YivlError, match=r"prompt 1 is 4096 tokens long"):
        generate_full(tiny_model, IdTokenizer(), prompts, [None, None], GenerationSettings(temperature=0))
