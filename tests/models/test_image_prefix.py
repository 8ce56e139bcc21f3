"""The image-prefix KV cache of the running batch: a request about an image seen before is prefilled
after that image's kept keys and values and gets the tokens it gets without the cache."""

from __future__ import annotations

import gc

import pytest
import torch

from yivl.constants import IMAGE_TOKEN_INDEX as IMG
from yivl.models import image_prefix
from yivl.models.batch_decoder import BatchDecoder, Prompt
from yivl.models.generation import GenerationSettings, PrefixCache, generate_full
from yivl.models.image_prefix import ImagePrefixCache, image_cut, pixel_key

from .test_batch_decoder import GREEDY, IdTokenizer, _ids

SYSTEM = torch.randint(3, 1024, (20,), generator=torch.Generator().manual_seed(11)).tolist()


def _prompt(question: list[int], before: tuple[int, ...] = (7, 8)) -> list[int]:
    """The system prompt (20 ids), ``before`` (as "### Human:"), the image, then ``question``."""
    return [*SYSTEM, *before, IMG, *question]


def _finish(decoder: BatchDecoder) -> dict[int, str]:
    done = {}
    while decoder.size:
        done.update({row.key: row.result().text for row in decoder.step()})
    return done


def _solo(model, prompt: list[int], image: torch.Tensor) -> str:
    return generate_full(model, IdTokenizer(), [prompt], [image], GREEDY)[0].text


def test_a_second_question_about_an_image_gets_the_tokens_it_gets_without_the_cache(
    tiny_model, images
) -> None:
    first, second = _prompt([40, 41, 42]), _prompt([90, 91, 92, 93, 94])
    kept = ImagePrefixCache()
    decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), kept)
    key = pixel_key(images[0])
    decoder.add([Prompt(first, images[0], GREEDY, prefix=20, image_key=key)])
    assert (kept.hits, kept.misses, len(kept)) == (0, 1, 1)
    # the kept prefix is the system prompt, the two ids before the image, and the image's features
    (layer_keys, _), *_ = next(iter(kept._entries.values()))
    assert layer_keys.shape[2] == 20 + 2 + tiny_model.config.num_image_tokens
    _finish(decoder)

    plain = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache())
    plain.add([Prompt(second, images[0], GREEDY, prefix=20)])
    decoder.add([Prompt(second, images[0], GREEDY, prefix=20, image_key=key)])
    assert (kept.hits, kept.misses) == (1, 1)
    torch.testing.assert_close(decoder.state.logits, plain.state.logits, atol=1e-5, rtol=1e-5)
    assert decoder.state.positions.tolist() == plain.state.positions.tolist()
    answer = next(iter(_finish(decoder).values()))
    assert answer == next(iter(_finish(plain).values())) == _solo(tiny_model, second, images[0])
    assert len(_ids(answer)) == GREEDY.max_new_tokens


def test_rows_with_and_without_a_kept_image_share_one_batch_and_each_gets_its_solo_tokens(
    tiny_model, images
) -> None:
    kept = ImagePrefixCache()
    decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), kept)
    keys = [pixel_key(images[i]) for i in range(3)]
    warm = _prompt([5])
    decoder.add([Prompt(warm, images[0], GREEDY, prefix=20, image_key=keys[0])])
    _finish(decoder)
    # a kept image (hit), a new one (miss: kept from this prefill), a text-only row, a longer "before"
    rows = [
        (_prompt([60, 61, 62, 63]), images[0], keys[0]),
        (_prompt([70]), images[1], keys[1]),
        ([*SYSTEM, 3, 4, 5, 6], None, None),
        (_prompt([80, 81], before=(9, 9, 9, 9, 9)), images[2], keys[2]),
    ]
    made = [Prompt(p, im, GREEDY, prefix=20, image_key=k) for p, im, k in rows]
    added = decoder.add(made)
    assert (kept.hits, kept.misses, len(kept)) == (1, 3, 3)
    done = _finish(decoder)
    for row, (p, im, _) in zip(added, rows, strict=True):
        expected = generate_full(tiny_model, IdTokenizer(), [p], [im], GREEDY)[0].text
        assert done[row.key] == expected
    # the prefix kept from the mixed prefill serves the next question about images[1] exactly
    again = _prompt([99, 98, 97])
    decoder.add([Prompt(again, images[1], GREEDY, prefix=20, image_key=keys[1])])
    assert kept.hits == 2
    assert next(iter(_finish(decoder).values())) == _solo(tiny_model, again, images[1])


def test_a_burst_about_one_new_image_keeps_it_once_and_a_new_system_prompt_is_another_entry(
    tiny_model, images
) -> None:
    kept = ImagePrefixCache()
    decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), kept)
    key = pixel_key(images[0])
    decoder.add(
        [Prompt(_prompt([i, i + 1]), images[0], GREEDY, prefix=20, image_key=key) for i in (10, 20, 30)]
    )
    assert (kept.misses, len(kept)) == (3, 1)
    other_system = [1, 2, 3, IMG, 50]  # same image, another prefix: another entry
    decoder.add([Prompt(other_system, images[0], GREEDY, image_key=key)])
    assert len(kept) == 2 and kept.hits == 0
    _finish(decoder)


def test_rows_without_a_key_and_a_cache_turned_off_keep_nothing(tiny_model, images) -> None:
    for kept, key in ((ImagePrefixCache(), None), (ImagePrefixCache(max_entries=0), pixel_key(images[0]))):
        decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), kept)
        for _ in range(2):
            decoder.add([Prompt(_prompt([4, 5]), images[0], GREEDY, prefix=20, image_key=key)])
        assert len(kept) == 0 and kept.hits == 0 and kept.nbytes == 0
        _finish(decoder)


def _layers(size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One layer of ``size`` bytes in all (float32 keys and values)."""
    half = torch.zeros(size // 8)
    return [(half, half.clone())]


def test_entries_are_evicted_least_recent_first_within_both_bounds() -> None:
    kept = ImagePrefixCache(max_entries=2, max_bytes=1000)
    kept.put(("a",), _layers(400))
    kept.put(("b",), _layers(400))
    assert kept.get(("a",)) is not None  # a is now the most recent
    kept.put(("c",), _layers(400))  # over 2 entries: b goes
    assert ("b",) not in kept and ("a",) in kept and ("c",) in kept and kept.nbytes == 800
    kept.put(("d",), _layers(800))  # over 1000 bytes: a, then c go
    assert list(kept._entries) == [("d",)] and kept.nbytes == 800
    kept.put(("e",), _layers(1200))  # larger than the bound alone: not kept, nothing evicted
    assert list(kept._entries) == [("d",)]
    assert kept.get(("b",)) is None and kept.misses == 1 and kept.get(None) is None and kept.misses == 1


def test_bounds_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        ImagePrefixCache(max_entries=-1)


def test_pixel_key_is_the_content_and_is_remembered_only_while_the_tensor_lives() -> None:
    a = torch.rand(3, 8, 8)
    same = a.clone()
    assert pixel_key(a) == pixel_key(same) == pixel_key(a)
    assert pixel_key(a) != pixel_key(torch.rand(3, 8, 8))
    assert pixel_key(a) != pixel_key(a.to(torch.float64))  # the dtype is part of it
    assert pixel_key(a.to(torch.bfloat16))  # dtypes numpy lacks hash too
    before = len(image_prefix._digests)
    extra = torch.rand(3, 8, 8)
    pixel_key(extra)
    assert len(image_prefix._digests) == before + 1
    del extra
    gc.collect()
    assert len(image_prefix._digests) == before


def test_a_prompt_with_two_images_is_never_kept_and_answers_the_same_every_time(tiny_model, images) -> None:
    prompt = [*SYSTEM, 7, IMG, 8, 9, IMG, 10, 11]
    kept = ImagePrefixCache()
    decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), kept)
    answers = []
    for _ in range(2):
        decoder.add([Prompt(prompt, images[:2], GREEDY, prefix=20, image_key=pixel_key(images[:2]))])
        answers += list(_finish(decoder).values())
    assert len(kept) == 0 and kept.hits == 0
    assert (
        answers[0]
        == answers[1]
        == generate_full(tiny_model, IdTokenizer(), [prompt], [images[:2]], GREEDY)[0].text
    )


def test_room_is_made_before_an_entry_is_copied_so_the_bytes_never_pass_the_bound(tiny_model, images) -> None:
    probe = ImagePrefixCache()
    decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), probe)
    decoder.add([Prompt(_prompt([4]), images[0], GREEDY, prefix=20, image_key=pixel_key(images[0]))])
    _finish(decoder)
    size = probe.nbytes  # one entry of this prompt shape
    kept = ImagePrefixCache(max_entries=8, max_bytes=2 * size)
    decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), kept)
    peaks = []
    real_put = kept.put

    def put(key, layers):  # the entry exists now: the kept ones must leave room for it already
        peaks.append(kept.nbytes + sum(k.nbytes + v.nbytes for k, v in layers))
        real_put(key, layers)

    kept.put = put  # type: ignore[method-assign]
    for i in range(4):
        decoder.add([Prompt(_prompt([4]), images[i], GREEDY, prefix=20, image_key=pixel_key(images[i]))])
        _finish(decoder)
    assert max(peaks) <= 2 * size and len(kept) == 2 and kept.nbytes == 2 * size
    tight = ImagePrefixCache(max_entries=8, max_bytes=size - 1)  # one entry is too large: none is copied
    decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), tight)
    tight.put = lambda *_: pytest.fail("copied an entry that cannot be kept")  # type: ignore[method-assign]
    decoder.add([Prompt(_prompt([4]), images[0], GREEDY, prefix=20, image_key=pixel_key(images[0]))])
    _finish(decoder)
    assert not ImagePrefixCache(max_bytes=0).enabled and not ImagePrefixCache(max_entries=0).enabled


def test_image_cut_is_the_ids_up_to_the_image_with_text_after_it() -> None:
    assert image_cut([1, 2, IMG, 5, 6]) == 3
    assert image_cut([1, 2, 3]) is None
    assert image_cut([1, 2, IMG]) is None  # nothing after the image to prefill
    assert ImagePrefixCache.key([1, IMG, 5], None) is None
    assert ImagePrefixCache.key([1, IMG, 5], b"k") == ((1, IMG), b"k")
    assert ImagePrefixCache.key([1, IMG, 5, IMG, 6], b"k") is None  # one digest keys one image


def test_settings_change_nothing_of_what_is_kept(tiny_model, images) -> None:
    """Sampling settings are per row; the kept prefix serves a sampled row as it serves a greedy one."""
    kept = ImagePrefixCache()
    decoder = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache(), kept)
    key = pixel_key(images[3])
    decoder.add([Prompt(_prompt([1]), images[3], GREEDY, prefix=20, image_key=key)])
    _finish(decoder)
    sampled = GenerationSettings(temperature=0.8, top_p=0.9, max_new_tokens=6, stop=(), seed=5)
    prompt = _prompt([33, 34])
    decoder.add([Prompt(prompt, images[3], sampled, prefix=20, image_key=key)])
    assert kept.hits == 1
    got = next(iter(_finish(decoder).values()))
    plain = BatchDecoder(tiny_model, IdTokenizer(), PrefixCache())
    plain.add([Prompt(prompt, images[3], sampled, prefix=20)])
    assert got == next(iter(_finish(plain).values()))
