"""Caption metrics (BLEU, CIDEr-D, ROUGE-L) and the PTB-like preprocessing, by hand."""

from __future__ import annotations

import math

import pytest

from yivl.errors import YivlError
from yivl.evaluation.metrics import bleu_stats, cider_d, corpus_bleu, ptb_tokenize, rouge_l, score_captions

# (input, output) recorded from pycocoevalcap 1.2's pipeline: Stanford PTBTokenizer 3.4.1 with
# -preserveLines -lowerCase, then its punctuation filter.
PTB_REFERENCE = [
    ("A man riding a wave on top of a surfboard.", "a man riding a wave on top of a surfboard"),
    ("A woman's hand holding a cell phone.", "a woman 's hand holding a cell phone"),
    ("Is this a cat? No, it's a dog.", "is this a cat no it 's a dog"),
    ('A sign that says "STOP" on a pole.', "a sign that says stop on a pole"),
    ("A player swinging a bat (in a stadium).", "a player swinging a bat -lrb- in a stadium -rrb-"),
    ("A clock reading 3:45pm on a wall.", "a clock reading 3:45 pm on a wall"),
    ("A man wearing a hat -- smiling.", "a man wearing a hat smiling"),
    ("The kitchen has a stove, a fridge & a sink.", "the kitchen has a stove a fridge & a sink"),
    ("A boy can't reach the shelf; they're sad.", "a boy ca n't reach the shelf they 're sad"),
    ("The players' uniforms are red.", "the players uniforms are red"),
    ("A 50% off sale and a price of $9.99", "a 50 % off sale and a price of $ 9.99"),
    ("Mr. Smith in the U.S. on Main St. at 5 p.m.", "mr. smith in the u.s. on main st. at 5 p.m."),
    ("A boat at approx. 5 pm, i.e. late.", "a boat at approx 5 pm i.e. late"),
    ("A dog on a skateboard.The dog is happy...", "a dog on a skateboard.the dog is happy"),
    ("What a view!! A man surfing?!", "what a view !! a man surfing ?!"),
    ("A half-eaten sandwich from the '80s.", "a half-eaten sandwich from the '80s"),
    ("A man cannot lift 10,000 boxes.", "a man can not lift 10,000 boxes"),
    ("“Curly” quotes — and an em dash…", "curly quotes and an em dash"),
    ("A [large] {blue} box.", "a -lsb- large -rsb- -lcb- blue -rcb- box"),
]


@pytest.mark.parametrize(("text", "expected"), PTB_REFERENCE)
def test_ptb_tokenize_matches_recorded_java_output(text: str, expected: str) -> None:
    assert ptb_tokenize(text) == expected


def test_bleu_by_hand() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": clipped matches / counts per order:
    # 1-grams 5/6, 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the mat), 4-grams 0/3.
    stats = bleu_stats("the cat sat on the mat", ["the cat is on the mat"])
    assert stats.tolist() == [6, 6, 6, 5, 4, 3, 5, 3, 1, 0]
    b1, b2, b3, b4 = corpus_bleu(stats[None])
    assert b1 == pytest.approx(5 / 6)
    assert b2 == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert b3 == pytest.approx(0.5)  # (5/6 * 3/5 * 1/4) ** (1/3) = 0.125 ** (1/3)
    # no 4-gram matches, yet not 0: the numerator gets tiny = 1e-15 (pycocoevalcap's smoothing)
    assert b4 == pytest.approx((0.125 * 1e-15 / 3) ** 0.25, rel=1e-6)


def test_bleu_closest_reference_length_ties_to_shorter() -> None:
    stats = bleu_stats("a b c d e", ["a b c", "a b c d e f g"])  # |5-3| == |5-7|
    assert stats[1] == 3


def test_bleu_brevity_penalty() -> None:
    # c = 2 < r = 4: every BLEU-n is multiplied by exp(1 - 4/2) = e^-1
    assert corpus_bleu(bleu_stats("a b", ["a b c d"])[None])[0] == pytest.approx(math.exp(-1))


def test_bleu_is_corpus_level() -> None:
    # image 1: 3/3 unigrams right, image 2: 0/1 -> corpus BLEU-1 = 3/4 (the mean of sentence BLEUs is 1/2)
    stats = [bleu_stats("a b c", ["a b c"]), bleu_stats("x", ["y"])]
    assert corpus_bleu(sum(stats)[None])[0] == pytest.approx(0.75)


def test_cider_by_hand() -> None:
    # 2 images -> idf = ln 2 - ln(max(1, df)) = ln 2 for every n-gram here (df <= 1).
    # image 1, hyp "a b" = ref "a b": cosine 1 for orders 1 and 2, 0 for 3 and 4 -> mean 0.5, x10 = 5.
    # image 2, hyp "c" vs ref "d": nothing shared -> 0.
    mean, per_image = cider_d(["a b", "c"], [["a b"], ["d"]])
    assert per_image == pytest.approx([5.0, 0.0])
    assert mean == pytest.approx(2.5)


def test_cider_length_penalty_uses_bigram_counts() -> None:
    # hyp "a b" vs ref "a b c": order 1 cosine 2/sqrt(2*3), order 2 1/sqrt(1*2); "lengths" are bigram
    # counts 1 and 2 -> penalty exp(-(1-2)^2 / (2 * 6^2)) = exp(-1/72).
    _, per_image = cider_d(["a b", "x"], [["a b c"], ["y"]])
    expected = (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72) * 10
    assert per_image[0] == pytest.approx(expected)


def test_cider_single_image_is_zero() -> None:
    # ln(1 image) - ln(df = 1) = 0: every weight vanishes
    assert cider_d(["a man riding a horse"], [["a man riding a horse"]])[0] == 0.0


def test_rouge_l_by_hand() -> None:
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 -> P = R = 5/6 -> F = 5/6
    assert rouge_l("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(5 / 6)
    # precision and recall are maximised separately: ref 1 gives P = 1, ref 2 gives R = 1 -> F = 1
    assert rouge_l("a b", ["a b c d", "a"]) == pytest.approx(1.0)
    assert rouge_l("", ["a b"]) == 0.0


def test_score_captions_end_to_end() -> None:
    hyps = ["A cat, sitting.", "A dog!"]
    refs = [["a cat sitting"], ["a dog running", "the dog"]]
    result = score_captions(hyps, refs)
    v = result.metrics.values
    # tokenized hyps "a cat sitting" / "a dog": every hyp n-gram matches (5 unigrams, 3 bigrams,
    # 1 trigram); c = 5, closest r = 3 + 2 -> no brevity penalty
    assert v["bleu_1"] == pytest.approx(1.0)
    assert v["bleu_3"] == pytest.approx(1.0)
    # ROUGE-L image 1 = 1; image 2 "a dog": vs "a dog running" P = 1, R = 2/3; vs "the dog" P = R = 1/2
    # -> max P = 1, max R = 2/3 -> F = 2.44 * 1 * (2/3) / (2/3 + 1.44 * 1)
    assert v["rouge_l"] == pytest.approx((1.0 + 2.44 * (2 / 3) / (2 / 3 + 1.44)) / 2)
    assert result.metrics.main == "cider" and result.metrics.n == 2
    assert len(result.cider) == len(result.rouge_l) == 2
    assert result.metrics.notes["caption_tokenizer"] == "python"


def test_caption_input_errors() -> None:
    with pytest.raises(YivlError, match="#1: 'captions' must be a non-empty list"):
        score_captions(["a", "b"], [["a"], []])
    with pytest.raises(YivlError, match="python, java, none"):
        score_captions(["a"], [["a"]], tokenizer="nltk")
