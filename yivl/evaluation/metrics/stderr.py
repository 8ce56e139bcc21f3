"""Standard errors: analytic for means of per-sample scores, a seeded bootstrap for everything else."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_BOOTSTRAP_ITERS = 1000


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean, ``sqrt(var_ddof1 / n)`` (lm-eval's ``mean_stderr``); None if n < 2."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def bootstrap_replicates(
    statistic: Callable[[np.random.Generator], float | np.ndarray],
    iters: int = DEFAULT_BOOTSTRAP_ITERS,
    seed: int = 0,
) -> np.ndarray:
    """``statistic(rng)`` evaluated ``iters`` times with one generator seeded once: [iters, ...].

    ``statistic`` draws its own resample from ``rng`` (see ``resample``), so stratified schemes
    (MME: images within each subtask) fit the same helper, and the result is a pure function of the
    data, ``iters`` and ``seed``.
    """
    if iters < 2:
        raise ValueError("bootstrap needs at least 2 iterations")
    rng = np.random.default_rng(seed)
    return np.array([statistic(rng) for _ in range(iters)], dtype=np.float64)


def bootstrap_stderr(
    statistic: Callable[[np.random.Generator], float],
    iters: int = DEFAULT_BOOTSTRAP_ITERS,
    seed: int = 0,
) -> float | None:
    """Standard deviation (ddof=1) of a scalar ``statistic`` over bootstrap replicates; None if not finite."""
    replicates = bootstrap_replicates(statistic, iters, seed)
    if not np.all(np.isfinite(replicates)):
        return None
    return float(replicates.std(ddof=1))


def resample(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` indices drawn with replacement from ``range(n)``: int64 array of shape [n]."""
    return rng.integers(0, n, size=n)
