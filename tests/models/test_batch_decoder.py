"""Continuous batching: rows that join and leave a running batch get the tokens they get alone;
per-row penalties, logprobs and budgets."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from yivl.constants import IMAGE_TOKEN_INDEX as IMG
from yivl.models.batch_decoder import BatchDecoder, Prompt
from yivl.models.generation import GenerationSettings, PrefixCache, generate_full
from yivl.models.sampling import penalize, token_logprob

GREEDY = GenerationSettings(temperature=0, max_new_tokens=12, stop=())


class IdTokenizer:
    """Decodes every id to "<id>", so answers compare token by token; eos never comes."""

    pad_token_id = 0
    eos_token_id = -1

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"<{i}>" for i in ids)


def _ids(text: str) -> list[int]:
    """ "<5><9>" -> [5, 9]."""
    return [int(t) for t in text[1:-1].split("><")] if text else []


def _prompts(images: torch.Tensor) -> tuple[list[list[int]], list[torch.Tensor | None]]:
    """A 20-token shared prefix (cached), then suffixes of mixed lengths; two with an image."""
    g = torch.Generator().manual_seed(7)
    system = torch.randint(3, 1024, (20,), generator=g).tolist()
    prompts = [[*system, *torch.randint(3, 1024, (n,), generator=g).tolist()] for n in (3, 9, 1, 5)]
    prompts[1].insert(22, IMG)
    prompts[3].insert(20, IMG)
    return prompts, [None, images[0], None, images[1]]


def _run(decoder: BatchDecoder, joins: dict[int, list[Prompt]]) -> dict[int, list]:
    """Step until every row is done; ``joins[step]`` joins before that step. Finished rows by key."""
    done, step = {}, 0
    while decoder.size or any(s >= step for s in joins):
        if step in joins:
            decoder.add(joins[step])
        done.update({row.key: row for row in decoder.step()})
        step += 1
    return done


def test_rows_joining_at_different_steps_get_their_solo_tokens(tiny_model, images) -> None:
    prompts, imgs = _prompts(images)
    tok = IdTokenizer()
    solo = [generate_full(tiny_model, tok, [p], [im], GREEDY)[0] for p, im in zip(prompts, imgs, strict=True)]
    budgets = [12, 5, 12, 8]  # rows leave early, so the batch shrinks and is trimmed while others run
    prefixes = PrefixCache()
    decoder = BatchDecoder(tiny_model, tok, prefixes)
    made = [
        Prompt(p, im, GenerationSettings(temperature=0, max_new_tokens=b, stop=()), prefix=20)
        for p, im, b in zip(prompts, imgs, budgets, strict=True)
    ]
    done = _run(decoder, {0: [made[0]], 2: [made[1], made[2]], 6: [made[3]]})
    for key, (g, budget) in enumerate(zip(solo, budgets, strict=True)):
        result = done[key].result()
        assert result.text == tok.decode(_ids(g.text)[:budget])
        assert (result.num_tokens, result.finish_reason) == (budget, "length")
    assert prefixes.computed == 1 and decoder.state is None


def test_a_removed_row_leaves_and_the_others_go_on(tiny_model, images) -> None:
    prompts, imgs = _prompts(images)
    tok = IdTokenizer()
    solo = generate_full(tiny_model, tok, [prompts[2]], [None], GREEDY)[0]
    decoder = BatchDecoder(tiny_model, tok, PrefixCache())
    rows = decoder.add([Prompt(p, im, GREEDY) for p, im in zip(prompts[1:3], imgs[1:3], strict=True)])
    decoder.step()
    decoder.remove({rows[0].key})
    assert decoder.size == 1 and decoder.state.rows.tolist() == [rows[1].key]
    while decoder.size:
        finished = decoder.step()
    assert finished[0].result().text == solo.text


def test_logprobs_of_greedy_tokens_are_the_log_softmax_of_the_logits(tiny_model) -> None:
    prompt = [5, 9, 33, 70, 12]
    tok = IdTokenizer()
    settings = GenerationSettings(temperature=0, max_new_tokens=3, stop=(), logprobs=True, top_logprobs=2)
    decoder = BatchDecoder(tiny_model, tok, PrefixCache())
    decoder.add([Prompt(prompt, None, settings)])
    while decoder.size:
        finished = decoder.step()
    result = finished[0].result()
    ids = list(prompt)
    for entry in result.logprobs:
        with torch.no_grad():
            logits = tiny_model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).logits[0, -1]
        expected = logits.log_softmax(-1)
        assert entry.token == int(expected.argmax())
        assert abs(entry.logprob - float(expected.max())) < 1e-5
        best = expected.topk(2)
        assert [t for t, _ in entry.top] == best.indices.tolist()
        assert all(abs(lp - v) < 1e-5 for (_, lp), v in zip(entry.top, best.values.tolist(), strict=True))
        ids.append(entry.token)
    assert len(result.logprobs) == 3 and result.text == tok.decode(ids[len(prompt) :])


def test_penalties_follow_openai_and_change_the_greedy_token() -> None:
    logits = torch.tensor([0.0, 3.0, 2.5, 1.0])
    counts = {1: 2, 3: 1}
    out = penalize(logits, counts, frequency=0.5, presence=0.25)
    assert out.tolist() == [0.0, 3.0 - 2 * 0.5 - 0.25, 2.5, 1.0 - 0.5 - 0.25]
    assert int(logits.argmax()) == 1 and int(out.argmax()) == 2  # token 1 repeated: token 2 wins
    assert penalize(logits, counts, 0.0, 0.0) is logits
    assert penalize(logits, counts, -1.0, 0.0).tolist() == [0.0, 5.0, 2.5, 2.0]  # negative: encourage


def test_a_frequency_penalty_stops_a_greedy_row_repeating_itself(tiny_model) -> None:
    tok = IdTokenizer()
    free = generate_full(
        tiny_model, tok, [[5, 9, 33]], [None], GenerationSettings(temperature=0, max_new_tokens=30, stop=())
    )
    plain = _ids(free[0].text)
    assert len(set(plain)) < len(plain)  # the tiny model repeats itself
    settings = GenerationSettings(
        temperature=0, max_new_tokens=30, stop=(), presence_penalty=2.0, frequency_penalty=2.0
    )
    decoder = BatchDecoder(tiny_model, tok, PrefixCache())
    decoder.add([Prompt([5, 9, 33], None, settings)])
    while decoder.size:
        finished = decoder.step()
    penalized = _ids(finished[0].result().text)
    assert penalized != plain and len(set(penalized)) > len(set(plain))


def test_token_logprob_lists_the_best_alternatives_first() -> None:
    entry = token_logprob(torch.tensor([1.0, 3.0, 2.0]), token=2, top=2)
    expected = torch.tensor([1.0, 3.0, 2.0]).log_softmax(-1)
    assert entry.token == 2 and abs(entry.logprob - float(expected[2])) < 1e-6
    assert [t for t, _ in entry.top] == [1, 2]


def test_rows_come_back_in_prompt_order_when_prefixes_differ(tiny_model, images) -> None:
    prompts, imgs = _prompts(images)
    tok = IdTokenizer()
    solo = [
        generate_full(tiny_model, tok, [p], [im], GREEDY)[0].text for p, im in zip(prompts, imgs, strict=True)
    ]
    decoder = BatchDecoder(tiny_model, tok, PrefixCache())
    # prompts 1 and 3 without a cached prefix: the prefill groups are {0, 2} and {1, 3}
    made = [
        Prompt(p, im, GREEDY, prefix=20 * (i % 2 == 0))
        for i, (p, im) in enumerate(zip(prompts, imgs, strict=True))
    ]
    rows = decoder.add(made)
    done = _run(decoder, {})
    assert [done[row.key].result().text for row in rows] == solo


def _alone(model, tok: IdTokenizer, prompt: Prompt) -> str:
    decoder = BatchDecoder(model, tok, PrefixCache())
    decoder.add([prompt])
    return _run(decoder, {})[0].result().text


def test_plain_greedy_rows_next_to_penalized_and_sampled_rows_get_their_solo_tokens(tiny_model) -> None:
    # plain greedy rows share the batch's one argmax; the others choose row by row in the same step
    tok = IdTokenizer()
    penalized = GenerationSettings(temperature=0, max_new_tokens=12, stop=(), presence_penalty=2.0)
    sampled = GenerationSettings(temperature=1.0, top_k=None, max_new_tokens=12, stop=(), seed=3)
    made = [
        Prompt([5, 9, 33], None, GREEDY),
        Prompt([5, 9, 33, 70], None, penalized),
        Prompt([7, 12], None, sampled),
        Prompt([40, 41, 42, 43], None, GREEDY),
    ]
    solo = [_alone(tiny_model, tok, p) for p in made]
    assert solo[0] == generate_full(tiny_model, tok, [[5, 9, 33]], [None], GREEDY)[0].text
    decoder = BatchDecoder(tiny_model, tok, PrefixCache())
    rows = decoder.add(made)
    assert [r.plain for r in rows] == [True, False, False, True]
    done = _run(decoder, {})
    assert [done[row.key].result().text for row in rows] == solo
