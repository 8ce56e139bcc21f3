"""VQA soft accuracy and the two answer normalisations, against hand-computed values."""

from __future__ import annotations

import pytest

from yivl.errors import YivlError
from yivl.evaluation.metrics import evalai_normalize, official_normalize, score_vqa, summarize_vqa


@pytest.mark.parametrize(
    ("k", "expected"),
    # Leave-one-out by hand: of the 10 subsets of 9 answers, 10-k keep all k matches, k keep k-1;
    # each scores min(1, matches/3). k=1: 9*(1/3)/10 = 0.3; k=2: (8*2/3 + 2*1/3)/10 = 0.6;
    # k=3: (7*1 + 3*2/3)/10 = 0.9; k=4: every subset keeps >= 3 matches -> 1.
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out_closed_form(k: int, expected: float) -> None:
    answers = ["cat"] * k + ["dog"] * (10 - k)
    assert score_vqa("cat", answers).accuracy == pytest.approx(expected)
    assert score_vqa("cat", answers, norm="official").accuracy == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "official", "evalai"),
    # The spec's table (evaluation.md 3.1), traced through processPunctuation/processDigitArticle.
    [
        ("Two", "2", "2"),
        ("The dog.", "dog", "dog"),
        ("10,000", "10000", "10000"),
        ("U.S.A.", "usa", "usa"),
        ("None", "0", "0"),
        ("dont", "don't", "don't"),
        ("it's", "it's", "it 's"),  # EvalAI's word_tokenize splits 's
        ("cat's toy", "cat's toy", "cat 's toy"),
        ("red-white 1,000", "redwhite 1000", "red white 1000"),  # digit-comma rule deletes '-' (official)
        ("12:30", "12:30", "12:30"),  # ':' is not in the punctuation list
        ("#1", "#1", "#1"),  # nor is '#'
        ("o'clock", "o'clock", "o'clock"),
        ("a", "", ""),  # an article alone normalises to nothing
        ("Yes!", "yes", "yes"),
        ("3.5 m", "3.5 m", "3.5 m"),  # a period before a digit survives
        ("Im", "im", "im"),  # capitalised contraction keys never match after lowercasing
        ("a (b)", "b", "b"),  # ' (' touches a space in the input -> every '(' and ')' deleted
        ("x(y)z", "x y z", "x y z"),  # no space next to the marks -> replaced by spaces
    ],
)
def test_normalisation_table(text: str, official: str, evalai: str) -> None:
    assert official_normalize(text) == official
    assert evalai_normalize(text) == evalai


def test_period_strip_count_quirk() -> None:
    # re.UNICODE (32) is passed as `count`, so only the first 32 of 40 periods are removed.
    text = "x." * 40
    assert official_normalize(text) == "x" * 32 + "x." * 8
    assert evalai_normalize(text) == "x" * 32 + "x." * 8


def test_official_unanimous_answers_are_not_normalised() -> None:
    answers = ["yes"] * 10
    assert score_vqa("Yes", answers, norm="official").accuracy == 0.0  # vqaEval.py quirk
    assert score_vqa("yes.", answers, norm="official").accuracy == 0.0
    assert score_vqa(" yes\n", answers, norm="official").accuracy == 1.0  # whitespace is always stripped
    assert score_vqa("Yes", answers).accuracy == 1.0  # EvalAI normalises both sides always


def test_official_normalises_when_answers_disagree() -> None:
    answers = ["yes"] * 9 + ["Yes."]  # two distinct strings -> both sides normalised -> ten "yes"
    assert score_vqa("Yes", answers, norm="official").accuracy == 1.0


def test_normalisations_disagree_on_hyphen_with_digit_comma() -> None:
    answers = ["red white 1000"] * 4 + ["blue"] * 6
    assert score_vqa("red-white 1,000", answers).accuracy == 1.0  # both -> "red white 1000"
    official = score_vqa("red-white 1,000", answers, norm="official")
    assert official.prediction == "redwhite 1000"
    assert official.accuracy == 0.0


def test_prediction_is_reported_normalised() -> None:
    assert score_vqa("The Two dogs.", ["2 dogs"] * 10).prediction == "2 dogs"


@pytest.mark.parametrize("count", [0, 9, 11])
def test_wrong_number_of_answers_is_a_user_error(count: int) -> None:
    with pytest.raises(YivlError, match=r"q7: a VQA record needs exactly 10 answers, got"):
        score_vqa("cat", ["cat"] * count, where="q7")


def test_unknown_normalisation() -> None:
    with pytest.raises(YivlError, match="evalai, official"):
        score_vqa("cat", ["cat"] * 10, norm="strict")


def test_summary_overall_and_per_type() -> None:
    result = summarize_vqa([1.0, 0.3, 0.6, 0.0], answer_types=["yes/no", "number", "number", None])
    # mean 0.475; sample var = (0.525^2 + 0.175^2 + 0.125^2 + 0.475^2) / 3 = 0.1825; se = sqrt(0.1825/4)
    assert result.values["accuracy"] == pytest.approx(47.5)
    assert result.stderr["accuracy"] == pytest.approx(100 * (0.1825 / 4) ** 0.5)
    assert result.values["accuracy/answer_type/number"] == pytest.approx(45.0)
    assert result.stderr["accuracy/answer_type/number"] == pytest.approx(15.0)  # sqrt(0.045 / 2)
    assert result.values["accuracy/answer_type/yes/no"] == 100.0
    assert result.stderr["accuracy/answer_type/yes/no"] is None  # one sample: no stderr
    assert result.group_n == {"accuracy/answer_type/yes/no": 1, "accuracy/answer_type/number": 2}
    out = result.to_dict()
    assert (out["main"], out["n"], out["n_unparsed"]) == ("accuracy", 4, 0)
    assert out["stderr"] == result.stderr["accuracy"]
