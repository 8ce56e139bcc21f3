"""Generation: batched greedy equals one-by-one and an uncached reference, stops, streaming, sampling."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from yivl.constants import IMAGE_TOKEN_INDEX as IMG
from yivl.errors import YivlError
from yivl.models.generation import Generation, GenerationSettings, PrefixCache, generate, generate_full
from yivl.models.sampling import next_tokens
from yivl.models.text_stream import find_stop
from yivl.models.yivl import YiVL

GREEDY = GenerationSettings(temperature=0, max_new_tokens=16, stop=())


class IdTokenizer:
    """Decodes every id to "<id>", so answers compare token by token; eos is configurable."""

    pad_token_id = 0

    def __init__(self, eos_token_id: int = 2) -> None:
        self.eos_token_id = eos_token_id

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"<{i}>" for i in ids)


def _prompts(images: torch.Tensor) -> tuple[list[list[int]], list[torch.Tensor | None]]:
    """Mixed lengths; images at different places; one text-only prompt."""
    g = torch.Generator().manual_seed(3)
    lengths = [4, 11, 2, 7, 13]
    prompts = [torch.randint(3, 1024, (n,), generator=g).tolist() for n in lengths]
    prompts[1].insert(3, IMG)
    prompts[3].insert(0, IMG)
    prompts[4].insert(13, IMG)
    return prompts, [None, images[0], None, images[1], images[2]]


@torch.no_grad()
def _reference_greedy(
    model: YiVL, prompt: list[int], image, steps: int, eos: int = 2, until=None
) -> list[int]:
    """Greedy decoding by full forward passes, without cache, padding or batching; ``until(ids)`` ends it."""
    out: list[int] = []
    pixels = None if image is None else image[None]
    for _ in range(steps):
        ids = torch.tensor([prompt + out])
        token = int(model(ids, torch.ones_like(ids), pixel_values=pixels).logits[0, -1].argmax())
        if token == eos:
            break
        out.append(token)
        if until is not None and until(out):
            break
    return out


def test_batched_greedy_equals_one_by_one_and_reference(tiny_model, images) -> None:
    prompts, imgs = _prompts(images)
    tok = IdTokenizer()
    batched = generate(tiny_model, tok, prompts, imgs, GREEDY)
    singles = [generate(tiny_model, tok, [p], [im], GREEDY)[0] for p, im in zip(prompts, imgs, strict=True)]
    assert batched == singles
    for prompt, image, answer in zip(prompts, imgs, batched, strict=True):
        expected = _reference_greedy(tiny_model, prompt, image, GREEDY.max_new_tokens)
        assert answer == tok.decode(expected)
        assert len(expected) == GREEDY.max_new_tokens


def test_a_prefix_cache_reused_across_calls_changes_no_answer(tiny_model, images) -> None:
    """The system-prompt KV cache computed once and reused by batches of other sizes and prompts."""
    g = torch.Generator().manual_seed(5)
    system = torch.randint(3, 1024, (20,), generator=g).tolist()  # >= MIN_SHARED_PREFIX
    prompts = [[*system, IMG, *torch.randint(3, 1024, (n,), generator=g).tolist()] for n in (3, 6, 1, 4)]
    imgs = [images[i % images.shape[0]] for i in range(len(prompts))]
    tok, prefixes = IdTokenizer(), PrefixCache()
    expected = [
        _reference_greedy(tiny_model, p, im, GREEDY.max_new_tokens)
        for p, im in zip(prompts, imgs, strict=True)
    ]
    for rows in ([0, 1, 2], [1, 3], [0, 1, 2, 3], [3, 2]):
        answers = generate(
            tiny_model, tok, [prompts[r] for r in rows], [imgs[r] for r in rows], GREEDY, prefixes=prefixes
        )
        assert answers == [tok.decode(expected[r]) for r in rows]
    assert prefixes.computed == 1  # one prefix, run through the model once for the four calls


def test_eos_ends_one_sample_while_others_go_on(tiny_model, images) -> None:
    prompts, imgs = _prompts(images)
    free = _reference_greedy(tiny_model, prompts[0], imgs[0], 16)
    cut = next(i for i, t in enumerate(free) if i >= 3 and t not in free[:i])  # a token new at step >= 3
    tok = IdTokenizer(eos_token_id=free[cut])
    answers = generate(tiny_model, tok, prompts, imgs, GREEDY)
    assert answers[0] == tok.decode(free[:cut])
    for b in range(1, len(prompts)):
        assert answers[b] == tok.decode(_reference_greedy(tiny_model, prompts[b], imgs[b], 16, eos=free[cut]))


def test_stop_string_is_cut_and_streaming_adds_up(tiny_model, images, stub_tokenizer) -> None:
    prompts, imgs = _prompts(images)
    settings = GenerationSettings(temperature=0, max_new_tokens=40)
    assert settings.stop == ("###",)
    deltas: dict[int, list[str]] = {i: [] for i in range(len(prompts))}
    answers = generate(tiny_model, stub_tokenizer, prompts, imgs, settings, lambda i, d: deltas[i].append(d))
    stopped, decode = 0, stub_tokenizer.decode
    for b, answer in enumerate(answers):
        ids = _reference_greedy(tiny_model, prompts[b], imgs[b], 40, until=lambda t: "###" in decode(t))
        texts = [stub_tokenizer.decode(ids[:n]) for n in range(1, len(ids) + 1)]
        first = next((t for t in texts if find_stop(t, ("###",)) is not None), None)
        stopped += first is not None
        expected = first[: first.index("###")] if first is not None else texts[-1]
        assert answer == expected.strip()
        assert "".join(deltas[b]) == answer and "###" not in answer
    assert stopped >= 2  # the stub decodes many ids to "#", so stops do happen


def test_prompt_longer_than_the_context_is_an_error(tiny_model, stub_tokenizer) -> None:
    with pytest.raises(YivlError, match=r"prompt 1 is 4096 tokens long.*context is 4096"):
        generate(tiny_model, stub_tokenizer, [[5], [7] * 4096], [None, None], GREEDY)


def test_generation_stops_when_the_context_is_full(tiny_config) -> None:
    config = type(tiny_config)(
        **{**vars(tiny_config), "llm": {**tiny_config.llm, "max_position_embeddings": 12}}
    )
    torch.manual_seed(0)
    model = YiVL(config).eval()
    tok = IdTokenizer(eos_token_id=-1)
    answers = generate(model, tok, [[5] * 9, [6] * 4], [None, None], GREEDY)
    assert [a.count("<") for a in answers] == [3, 8]
    full = generate_full(model, tok, [[5] * 9, [6] * 4], [None, None], GREEDY)
    assert [(g.num_tokens, g.finish_reason) for g in full] == [(3, "length"), (8, "length")]


def test_generate_full_counts_tokens_and_says_length_when_the_budget_runs_out(tiny_model, images) -> None:
    prompts, imgs = _prompts(images)
    tok = IdTokenizer(eos_token_id=-1)  # never sampled, and no stop strings: nothing can end an answer early
    settings = GenerationSettings(temperature=0, max_new_tokens=3, stop=())
    full = generate_full(tiny_model, tok, prompts, imgs, settings)
    assert [(g.num_tokens, g.finish_reason) for g in full] == [(3, "length")] * len(prompts)
    assert [g.text for g in full] == generate(tiny_model, tok, prompts, imgs, settings)
    assert all(g.text.count("<") == 3 for g in full)


def test_generate_full_says_stop_at_eos_and_counts_the_eos(tiny_model, images) -> None:
    prompts, imgs = _prompts(images)
    free = _reference_greedy(tiny_model, prompts[0], imgs[0], 16)
    cut = next(i for i, t in enumerate(free) if i >= 3 and t not in free[:i])
    tok = IdTokenizer(eos_token_id=free[cut])
    full = generate_full(tiny_model, tok, prompts, imgs, GREEDY)
    assert full[0] == Generation(tok.decode(free[:cut]), cut + 1, "stop")
    assert [g.text for g in full] == generate(tiny_model, tok, prompts, imgs, GREEDY)
    for b, g in enumerate(full):
        ids = _reference_greedy(tiny_model, prompts[b], imgs[b], 16, eos=free[cut])
        hit_eos = len(ids) < 16
        assert (g.num_tokens, g.finish_reason) == ((len(ids) + 1, "stop") if hit_eos else (16, "length"))


def test_generate_full_says_stop_at_a_stop_string(tiny_model, images, stub_tokenizer) -> None:
    prompts, imgs = _prompts(images)
    settings = GenerationSettings(temperature=0, max_new_tokens=40)
    full = generate_full(tiny_model, stub_tokenizer, prompts, imgs, settings)
    assert [g.text for g in full] == generate(tiny_model, stub_tokenizer, prompts, imgs, settings)
    decode, stopped = stub_tokenizer.decode, 0
    for b, g in enumerate(full):
        ids = _reference_greedy(tiny_model, prompts[b], imgs[b], 40, until=lambda t: "###" in decode(t))
        if "###" in decode(ids):  # the token that completed the stop string is generated and counted
            stopped += 1
            assert (g.num_tokens, g.finish_reason) == (len(ids), "stop")
        elif len(ids) < 40:  # eos
            assert (g.num_tokens, g.finish_reason) == (len(ids) + 1, "stop")
        else:
            assert (g.num_tokens, g.finish_reason) == (40, "length")
    assert stopped >= 2


@pytest.mark.parametrize(
    ("images_given", "pattern"),
    [([None], "prompt 0 has 1 <image_placeholder> but 0"), ([None, None], "1 prompts but 2 image")],
)
def test_image_mismatch_is_an_error(tiny_model, stub_tokenizer, images_given, pattern: str) -> None:
    with pytest.raises(YivlError, match=pattern):
        generate(tiny_model, stub_tokenizer, [[5, IMG, 6]], images_given, GREEDY)


def test_seeded_sampling_repeats(tiny_model, images) -> None:
    prompts, imgs = _prompts(images)
    tok = IdTokenizer()

    def sample(seed: int, **kw) -> list[str]:
        settings = GenerationSettings(temperature=1.0, max_new_tokens=8, stop=(), seed=seed, **kw)
        return generate(tiny_model, tok, prompts, imgs, settings)

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    greedy = generate(
        tiny_model, tok, prompts, imgs, GenerationSettings(temperature=0, max_new_tokens=8, stop=())
    )
    assert sample(9, top_k=1) == greedy
    assert sample(9, top_k=None, top_p=1e-6) == greedy


def test_top_k_and_top_p_filters() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(next_tokens(logits, 1.0, top_p=0.7, generator=g).tolist()) == {0, 1}
    assert set(next_tokens(logits, 1.0, top_k=3, generator=g).tolist()) == {0, 1, 2}
    assert set(next_tokens(logits, 1.0, generator=g).tolist()) == {0, 1, 2, 3}
    assert next_tokens(logits[:1], 0.0).tolist() == [0]


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_p": 0.0}, {"top_k": 0}, {"max_new_tokens": 0}])
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(YivlError):
        GenerationSettings(**kwargs)
