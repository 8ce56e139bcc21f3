"""Standard errors: the analytic formula and the seeded bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from yivl.evaluation.metrics import bootstrap_stderr, mean_stderr, score_captions
from yivl.evaluation.metrics.stderr import resample


def test_mean_stderr_by_hand() -> None:
    # [1, 0, 1, 0]: mean 0.5, sample variance 4 * 0.25 / 3 = 1/3, se = sqrt(1/3 / 4) = 0.288675
    assert mean_stderr([1.0, 0.0, 1.0, 0.0]) == pytest.approx(0.2886751346)
    assert mean_stderr([1.0]) is None


def test_bootstrap_is_deterministic_and_close_to_analytic() -> None:
    values = np.array([0.0, 1.0] * 50)

    def mean_of_resample(rng: np.random.Generator) -> float:
        return float(values[resample(rng, len(values))].mean())

    first = bootstrap_stderr(mean_of_resample, iters=500, seed=7)
    assert first == bootstrap_stderr(mean_of_resample, iters=500, seed=7)
    assert first != bootstrap_stderr(mean_of_resample, iters=500, seed=8)
    assert first == pytest.approx(mean_stderr(values.tolist()), rel=0.15)  # 0.0503 analytically


def test_caption_stderrs_are_seeded() -> None:
    hyps = ["a man riding a horse", "a dog", "two cats on a bed", "a red bus"]
    refs = [["a man on a horse"], ["a small dog"], ["cats sleeping on a bed"], ["a bus on the street"]]
    first = score_captions(hyps, refs, seed=1, iters=200).metrics.stderr
    assert first == score_captions(hyps, refs, seed=1, iters=200).metrics.stderr
    assert first["bleu_1"] is not None and first["bleu_1"] > 0
    assert first["cider"] == pytest.approx(mean_stderr(score_captions(hyps, refs).cider))
