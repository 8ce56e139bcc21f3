"""Multiple choice: letter extraction without a random fallback, likelihood picks, accuracy summary.

An answer that cannot be mapped to exactly one option is *unparsed*: it counts as wrong and is
counted (``n_unparsed``), never replaced by a guess.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from yivl.errors import YivlError
from yivl.evaluation.metrics.summary import TaskMetrics, grouped_means, mean_metric

MAX_CHOICES = 26
_WRAPPING = " \t\r\n*_`'\"()[]{}<>.,:;!?"
_LEADING_LABEL = re.compile(r"^[\s*_`]*[(\[]?([A-Z])[)\].:](?:\s|$)")
_ANSWER_PHRASE = re.compile(
    r"(?i:\b(?:answer|option|choice)\b)(?:\s+(?i:is|would\s+be|should\s+be))?\s*[:：]?\s*[*_`]*[(\[]?([A-Z])\b"
)
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")


def choice_letters(num_choices: int) -> list[str]:
    """The option letters ``A, B, ...`` for ``num_choices`` options (2 to 26)."""
    if not 2 <= num_choices <= MAX_CHOICES:
        raise YivlError(f"a multiple-choice record needs 2 to {MAX_CHOICES} choices, got {num_choices}")
    return list(string.ascii_uppercase[:num_choices])


def extract_choice(response: str, choices: Sequence[str]) -> str | None:
    """Map a generated answer to one option letter, or None when no single option is indicated.

    Steps, first decisive one wins (each must point at exactly one distinct valid letter):
    1. the whole answer is a letter, possibly wrapped: ``"B"``, ``"(B)"``, ``"B."``, ``"**b**"``;
    2. it starts with a letter label: ``"B. blue"``, ``"(B) blue"``, ``"B) blue"``, ``"B: blue"``;
    3. an answer phrase: ``"The answer is B"``, ``"Answer: (C)"``, ``"option D"``;
    4. parenthesised letters anywhere: ``"I pick (C)"``;
    5. the text of exactly one option occurs as whole words (options contained in a longer matching
       option are dropped first, so "dark red" beats "red").
    """
    letters = choice_letters(len(choices))
    core = response.strip(_WRAPPING)
    if len(core) == 1 and core.upper() in letters:
        return core.upper()
    for pattern in (_LEADING_LABEL, _ANSWER_PHRASE, _PAREN_LETTER):
        found = {letter for letter in pattern.findall(response) if letter in letters}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return _match_option_text(response, choices, letters)


def _match_option_text(response: str, choices: Sequence[str], letters: list[str]) -> str | None:
    """The letter of the only option whose text occurs in ``response`` (case-insensitive, whole words)."""
    text = response.lower()
    hits = {}
    for letter, choice in zip(letters, choices, strict=True):
        option = " ".join(str(choice).lower().split())
        if option and re.search(rf"(?<!\w){re.escape(option)}(?!\w)", text):
            hits[letter] = option
    longest = [k for k, v in hits.items() if not any(v != w and v in w for w in hits.values())]
    return longest[0] if len(longest) == 1 else None


def pick_by_likelihood(logprob_sums: Sequence[float], token_counts: Sequence[int]) -> tuple[int, int]:
    """Option indices chosen by likelihood: (argmax of summed log-prob, argmax of mean log-prob per token).

    ``acc_sum`` is lm-eval-harness's rule; ``acc_mean`` equals lmms-eval's argmin of the mean token
    loss. Ties go to the first option.
    """
    if not logprob_sums or len(logprob_sums) != len(token_counts):
        raise ValueError("need one summed log-prob and one token count per option")
    if min(token_counts) < 1:
        raise ValueError("every option must have at least one token")
    means = [s / c for s, c in zip(logprob_sums, token_counts, strict=True)]
    return _argmax(logprob_sums), _argmax(means)


def _argmax(values: Sequence[float]) -> int:
    """Index of the first maximum."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def circular_accuracy(correct: Sequence[bool], groups: Sequence[str]) -> tuple[list[float], list[str]]:
    """CircularEval: a group (the rotated copies of one question) scores 1 only if every copy is right.

    Returns the per-group 0/1 scores and the group ids, in order of first appearance.
    """
    if len(correct) != len(groups):
        raise ValueError(f"{len(correct)} results but {len(groups)} group ids")
    all_right: dict[str, bool] = {}
    for ok, group in zip(correct, groups, strict=True):
        all_right[group] = all_right.get(group, True) and bool(ok)
    return [float(v) for v in all_right.values()], list(all_right)


def summarize_mcq(
    correct: Sequence[bool],
    unparsed: Sequence[bool],
    categories: Sequence[str | None] | None = None,
    circular_groups: Sequence[str] | None = None,
) -> TaskMetrics:
    """Accuracy (percent; unparsed answers are wrong) overall and per category, optional CircularEval.

    With ``circular_groups`` the headline metric is ``circular_accuracy`` (mean over groups, each
    group's category taken from its first copy) and plain ``accuracy`` is the "vanilla" number.
    """
    scores = [float(ok) for ok in correct]
    value, err = mean_metric("accuracy", scores)
    result = TaskMetrics(main="accuracy", values={"accuracy": value}, stderr={"accuracy": err})
    result.n, result.n_unparsed = len(scores), sum(bool(u) for u in unparsed)
    if categories is not None:
        _add_groups(result, "accuracy", scores, categories)
    if circular_groups is not None:
        group_scores, group_ids = circular_accuracy(correct, circular_groups)
        value, err = mean_metric("circular_accuracy", group_scores)
        result.main = "circular_accuracy"
        result.values["circular_accuracy"], result.stderr["circular_accuracy"] = value, err
        result.group_n["circular_groups"] = len(group_ids)
        if categories is not None:
            first = {}
            for group, category in zip(circular_groups, categories, strict=True):
                first.setdefault(group, category)
            _add_groups(result, "circular_accuracy", group_scores, [first[g] for g in group_ids])
    return result


def _add_groups(
    result: TaskMetrics, name: str, scores: Sequence[float], groups: Sequence[str | None]
) -> None:
    """Add per-group means, standard errors and counts of ``scores`` to ``result``."""
    values, errors, counts = grouped_means(name, scores, groups)
    result.values.update(values)
    result.stderr.update(errors)
    result.group_n.update(counts)
