"""The reject-fraction rule: a source that loses too many records, or every image record, stops the run.

Training and the data tools apply the same rule to a :class:`~yivl.data.reasons.Tally`; only the name of
the option that accepts a high fraction differs (``data.max_reject_fraction`` or
``--max-reject-fraction``). A source whose image records are all rejected cannot be accepted: it would
train a vision-language model on text alone.
"""

from __future__ import annotations

from yivl.data.reasons import REASONS, SkipCounter, Tally
from yivl.errors import YivlError

DEFAULT_MAX_REJECT_FRACTION = 0.05
MIN_SEEN = 200
"""Samples a stream must have seen before its running fraction is judged (the epoch end judges any)."""


def checked_fraction(value: float, option: str) -> float:
    """``value`` as a float in [0, 1]; YivlError naming ``option`` otherwise."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 <= fraction <= 1.0:  # NaN fails too
        raise YivlError(f"{option}={value} must be between 0 and 1 (1 accepts any number of rejects)")
    return fraction


def _top(rejected: dict[str, int]) -> str:
    """The three largest reasons, the first with its meaning: ``a=9 (meaning), b=2, c=1``."""
    top = sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    parts = [f"{name}={n}" for name, n in top]
    if parts:
        parts[0] += f" ({REASONS.get(top[0][0], '')})"
    return ", ".join(parts) or "none"


def reject_problem(tally: Tally, max_fraction: float, name: str, option: str) -> str | None:
    """One line saying why ``tally`` is unacceptable, or None when it passes the rule."""
    rejected = sum(tally.rejected.values())
    if tally.image_records and not tally.image_kept:
        return (
            f"{name}: all {tally.image_records} image records were rejected, top reasons: "
            f"{_top(tally.rejected)}; fix the records, the image folder or image_tokens "
            "(`python -m data_tools validate` lists them)"
        )
    if tally.total and rejected / tally.total > max_fraction:
        return (
            f"{name}: {rejected} of {tally.total} records rejected ({rejected / tally.total:.1%} > "
            f"{option}={max_fraction:g}), top reasons: {_top(tally.rejected)}; fix them "
            f"(`python -m data_tools validate` lists them) or accept the loss with {option}=1"
        )
    return None


class RejectGuard:
    """Applies the rule to a training source's running :class:`SkipCounter` (shared by its workers)."""

    def __init__(self, skips: SkipCounter, max_fraction: float, name: str) -> None:
        self.skips = skips
        self.max_fraction = checked_fraction(max_fraction, "data.max_reject_fraction")
        self.name = name

    def check(self, final: bool = False) -> None:
        """Raise YivlError when the rule fails; before the end only once ``MIN_SEEN`` samples were seen."""
        tally = self.skips.tally()
        if final or tally.total >= MIN_SEEN:
            self.judge(tally)

    def judge(self, tally: Tally) -> None:
        """Raise the rule's one-line YivlError when ``tally`` (any counts of this source) fails it."""
        problem = reject_problem(tally, self.max_fraction, self.name, "data.max_reject_fraction")
        if problem:
            raise YivlError(problem)
