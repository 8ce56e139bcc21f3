"""Corpus BLEU-1..4 exactly as pycocoevalcap's ``Bleu(4)`` (``bleu_scorer.py``, option ``closest``).

Not sacreBLEU and not a mean of sentence BLEUs: clipped n-gram matches, n-gram counts and lengths are
summed over all images first. Per image the reference length is the one closest to the hypothesis
length (ties to the shorter). The smoothing constants ``tiny=1e-15`` (numerator) and ``small=1e-9``
(denominator) keep zero counts from dividing by zero, and the brevity penalty ``exp(1 - r/c)`` is
applied when the summed hypothesis length c is below the summed reference length r.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

TINY = 1e-15
SMALL = 1e-9


def ngram_counts(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """Counts of all 1..n-grams of ``words``."""
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def bleu_stats(hypothesis: str, references: Sequence[str], n: int = 4) -> np.ndarray:
    """One image's sufficient statistics, float64 [2 + 2n]: hyp length, closest ref length,
    n-gram counts of the hypothesis (``guess``) for k=1..n, clipped matches (``correct``) for k=1..n.
    Inputs are pre-tokenized strings; words are ``str.split()`` pieces.
    """
    words = hypothesis.split()
    max_ref: Counter[tuple[str, ...]] = Counter()
    ref_lengths = []
    for reference in references:
        ref_words = reference.split()
        ref_lengths.append(len(ref_words))
        max_ref |= ngram_counts(ref_words, n)
    ref_len = min((abs(length - len(words)), length) for length in ref_lengths)[1]
    guess = [max(0, len(words) - k + 1) for k in range(1, n + 1)]
    correct = [0] * n
    for gram, count in ngram_counts(words, n).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
    return np.array([len(words), ref_len, *guess, *correct], dtype=np.float64)


def corpus_bleu(stats: np.ndarray, n: int = 4) -> list[float]:
    """BLEU-1..n from summed statistics (any [..., 2 + 2n] array is summed over its first axis)."""
    total = stats.sum(axis=0) if stats.ndim == 2 else stats
    test_len, ref_len = float(total[0]), float(total[1])
    guess, correct = total[2 : 2 + n], total[2 + n : 2 + 2 * n]
    bleus, product = [], 1.0
    for k in range(n):
        product *= float(correct[k] + TINY) / (guess[k] + SMALL)
        bleus.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + TINY) / (ref_len + SMALL)
    if ratio < 1:
        bleus = [b * math.exp(1 - 1 / ratio) for b in bleus]
    return bleus
