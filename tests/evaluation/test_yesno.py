"""POPE and MME: the official parsers' quirks and hand-computed metrics."""

from __future__ import annotations

import pytest

from yivl.errors import YivlError
from yivl.evaluation.metrics import (
    normalize_label,
    parse_mme,
    parse_pope,
    summarize_mme,
    summarize_pope,
    yesno_word,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("no.", "no"),
        ("No, there is none.", "no"),  # commas deleted -> the word "No"
        ("There is not a dog in the image.", "no"),
        ("Yes. There is no dog.", "yes"),  # only the first sentence counts
        ("NO", "yes"),  # spec 3.4: only No/not/no count, so these default to yes
        ("Nope", "yes"),
        ("Not present", "yes"),
        ("", "yes"),
    ],
)
def test_parse_pope(text: str, expected: str) -> None:
    assert parse_pope(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("No.", "no"),
        ("yes, it is", "yes"),
        ("Nope", "no"),  # spec 3.3: "no" inside the first 4 characters
        ("None", "no"),
        ("Not sure", "no"),
        ("There is no dog.", "other"),  # "ther" holds neither
        ("The answer is yes", "other"),
        ("y", "other"),  # the official parser has no single-letter rule
    ],
)
def test_parse_mme(text: str, expected: str) -> None:
    assert parse_mme(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("Yes, it is.", "yes"), ("No.", "no"), ("yes and no", None), ("Nope", None)]
)
def test_yesno_word(text: str, expected: str | None) -> None:
    assert yesno_word(text) == expected


def test_normalize_label() -> None:
    assert normalize_label(" Yes ") == "yes"
    with pytest.raises(YivlError, match="s3: a yes/no answer must be 'yes' or 'no', got 'maybe'"):
        normalize_label("maybe", where="s3")


PREDS = ["yes", "yes", "no", "no", "yes", "no"]
LABELS = ["yes", "no", "no", "yes", "yes", "no"]


def test_pope_metrics_by_hand() -> None:
    # TP = 2 (#0, #4), FP = 1 (#1), TN = 2 (#2, #5), FN = 1 (#3)
    result = summarize_pope(PREDS, LABELS, unclear=[False, True, False, False, False, False])
    v = result.values
    assert v["accuracy"] == pytest.approx(100 * 4 / 6)
    assert v["precision"] == pytest.approx(100 * 2 / 3)
    assert v["recall"] == pytest.approx(100 * 2 / 3)
    assert v["f1"] == pytest.approx(100 * 2 / 3)
    assert v["yes_ratio"] == pytest.approx(50.0)  # 3 of 6 *predictions* are yes
    assert (result.main, result.n, result.n_unparsed) == ("f1", 6, 1)


def test_pope_splits_and_f1_average() -> None:
    # split a: TP 1, FP 1, TN 1 -> P 1/2, R 1, F1 2/3; split b: TP 1, FN 1, TN 1 -> P 1, R 1/2, F1 2/3
    result = summarize_pope(PREDS, LABELS, splits=["a"] * 3 + ["b"] * 3)
    assert result.values["precision/a"] == pytest.approx(50.0)
    assert result.values["recall/b"] == pytest.approx(50.0)
    assert result.values["f1_avg"] == pytest.approx(100 * 2 / 3)
    assert result.group_n == {"a": 3, "b": 3}


def test_pope_zero_denominators_give_zero() -> None:
    result = summarize_pope(["no"] * 4, ["yes", "no", "yes", "no"])
    assert (result.values["precision"], result.values["f1"], result.values["yes_ratio"]) == (0.0, 0.0, 0.0)


def test_pope_bootstrap_is_seeded() -> None:
    first = summarize_pope(PREDS * 5, LABELS * 5, seed=3).stderr["f1"]
    assert first == summarize_pope(PREDS * 5, LABELS * 5, seed=3).stderr["f1"]
    assert first is not None and 0 < first < 50


def _mme_fixture() -> tuple[list[str], list[str], list[str], list[str]]:
    """existence: img1 both right, img2 one right; OCR: img3 both right; code_reasoning: img4 both
    wrong (one answer unparsed); shapes (not an MME subtask): img5 one right."""
    preds = ["yes", "no", "yes", "yes", "yes", "no", "other", "yes", "yes", "yes"]
    labels = ["yes", "no", "yes", "no", "yes", "no", "yes", "no", "yes", "no"]
    cats = ["existence"] * 4 + ["OCR"] * 2 + ["code_reasoning"] * 2 + ["shapes"] * 2
    pairs = ["img1", "img1", "img2", "img2", "img3", "img3", "img4", "img4", "img5", "img5"]
    return preds, labels, cats, pairs


def test_mme_scores_by_hand() -> None:
    result = summarize_mme(*_mme_fixture())
    v = result.values
    # existence: 3 of 4 questions (75) + 1 of 2 images (50) = 125; ocr: 100 + 100 = 200
    assert (v["acc/existence"], v["acc_plus/existence"], v["score/existence"]) == (75.0, 50.0, 125.0)
    assert v["score/ocr"] == 200.0
    assert v["score/code_reasoning"] == 0.0
    assert v["score/shapes"] == 50.0 + 0.0
    assert (v["perception"], v["cognition"], v["total"], v["other"]) == (325.0, 0.0, 325.0, 50.0)
    assert (result.main, result.n, result.n_unparsed) == ("total", 10, 1)
    assert result.stderr["score/ocr"] == 0.0  # one image: every resample is the same
    assert result.stderr["total"] > 0


def test_mme_needs_two_questions_per_image() -> None:
    preds, labels, cats, pairs = _mme_fixture()
    with pytest.raises(YivlError, match=r"MME image 'img1' \(existence\) has 3 questions"):
        summarize_mme([*preds, "yes"], [*labels, "yes"], [*cats, "existence"], [*pairs, "img1"])
