"""Multiple-choice letter extraction, likelihood picks, CircularEval and the accuracy summary."""

from __future__ import annotations

import pytest

from yivl.errors import YivlError
from yivl.evaluation.metrics import (
    choice_letters,
    circular_accuracy,
    extract_choice,
    pick_by_likelihood,
    summarize_mcq,
)

COLOURS = ["red", "blue", "green", "dark blue"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", "B"),  # 1: the whole answer is a letter
        ("(C)", "C"),
        ("b", "B"),  # a lone lowercase letter is still the whole answer
        ("**D**", "D"),
        ("A.", "A"),
        ("B. blue", "B"),  # 2: leading label
        ("(A) red", "A"),
        ("C) green", "C"),
        ("The answer is C.", "C"),  # 3: answer phrase
        ("Answer: (D)", "D"),
        ("The correct option is **B**", "B"),
        ("I would pick (C) here", "C"),  # 4: parenthesised letter
        ("It is green.", "C"),  # 5: unique option text
        ("The sky looks dark blue today", "D"),  # "blue" is inside the longer match "dark blue"
        ("Blue", "B"),
    ],
)
def test_extract_choice(response: str, expected: str) -> None:
    assert extract_choice(response, COLOURS) == expected


@pytest.mark.parametrize(
    "response",
    [
        "I am not sure",  # nothing
        "Either (A) or (B)",  # two parenthesised letters
        "E",  # a letter that is not an option
        "A cat",  # an article, not a label
        "red or green",  # two option texts
        "",
        "The answer is A. Option B is wrong.",  # answer phrases naming two letters
    ],
)
def test_unparsed_answers_have_no_fallback(response: str) -> None:
    assert extract_choice(response, COLOURS) is None
    assert extract_choice(response, COLOURS) is None  # deterministic: no random guess


def test_option_text_needs_whole_words() -> None:
    assert extract_choice("There are 12 of them", ["1", "2", "12"]) == "C"
    assert extract_choice("redish", COLOURS) is None


def test_choice_letters_bounds() -> None:
    assert choice_letters(3) == ["A", "B", "C"]
    with pytest.raises(YivlError, match="2 to 26 choices, got 1"):
        choice_letters(1)


def test_pick_by_likelihood_sum_and_mean_differ() -> None:
    # option 0: one token at -3.0 (mean -3.0); option 1: four tokens summing to -4.0 (mean -1.0)
    assert pick_by_likelihood([-3.0, -4.0], [1, 4]) == (0, 1)
    assert pick_by_likelihood([-2.0, -2.0], [2, 2]) == (0, 0)  # ties go to the first option


def test_circular_accuracy_needs_every_rotation() -> None:
    scores, groups = circular_accuracy([True, True, False, True, True, True], ["g1"] * 3 + ["g2"] * 3)
    assert (scores, groups) == ([0.0, 1.0], ["g1", "g2"])


def test_summary_counts_unparsed_as_wrong() -> None:
    result = summarize_mcq(
        correct=[True, False, True, True],
        unparsed=[False, True, False, False],
        categories=["x", "x", "y", "y"],
        circular_groups=["g1", "g1", "g2", "g2"],
    )
    # vanilla: 3/4 right; circular: g1 has a wrong copy -> 1 of 2 groups
    assert result.values["accuracy"] == 75.0
    assert result.n_unparsed == 1
    assert result.main == "circular_accuracy"
    assert result.values["circular_accuracy"] == 50.0
    assert result.values["accuracy/x"] == 50.0
    assert result.values["circular_accuracy/y"] == 100.0
    assert result.group_n["circular_groups"] == 2
    # analytic stderr of [1, 0, 1, 1]: sqrt(var_ddof1 / n) = sqrt(0.25 / 4)
    assert result.stderr["accuracy"] == pytest.approx(25.0)
