"""CIDEr-D exactly as pycocoevalcap's ``Cider()`` (``cider_scorer.py``).

TF-IDF vectors of 1..4-grams; the document frequency counts, for each n-gram, the images whose
*reference set* contains it, over the images being scored, so the score of an image depends on the
whole evaluated set (a 1-image set always scores 0, and ``--limit`` changes scores). Per n: the
clipped cosine ``sum min(h, r) * r / (|h| |r|)`` times the Gaussian length penalty
``exp(-(lh - lr)^2 / (2 sigma^2))``, where the "length" is the number of *bigrams* (a quirk of the
reference code). Averaged over n and over the references, times 10; the corpus score is the mean.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from yivl.evaluation.metrics.bleu import ngram_counts

Vector = tuple[list[dict[tuple[str, ...], float]], list[float], int]


def _document_frequency(ref_counts: Sequence[Sequence[Counter]]) -> Counter[tuple[str, ...]]:
    """For each n-gram, the number of images among whose references it occurs."""
    df: Counter[tuple[str, ...]] = Counter()
    for refs in ref_counts:
        df.update({gram for counts in refs for gram in counts})
    return df


def _tfidf(counts: Counter, df: Counter, log_num_images: float, n: int) -> Vector:
    """Per-order tf-idf weights, their L2 norms and the bigram count used as the length."""
    vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        order = len(gram) - 1
        weight = float(tf) * (log_num_images - math.log(max(1.0, df[gram])))
        vec[order][gram] = weight
        norm[order] += weight**2
        if order == 1:
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def _similarity(hyp: Vector, ref: Vector, n: int, sigma: float) -> list[float]:
    """Clipped cosine per order with the Gaussian length penalty."""
    (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
    penalty = math.e ** (-(float(len_h - len_r) ** 2) / (2 * sigma**2))
    out = []
    for order in range(n):
        val = sum(
            min(w, vec_r[order].get(g, 0.0)) * vec_r[order].get(g, 0.0) for g, w in vec_h[order].items()
        )
        if norm_h[order] != 0 and norm_r[order] != 0:
            val /= norm_h[order] * norm_r[order]
        out.append(val * penalty)
    return out


def cider_d(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and the per-image scores, from pre-tokenized strings (words = ``split()``)."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("need one non-empty reference list per hypothesis, and at least one image")
    ref_counts = [[ngram_counts(r.split(), n) for r in refs] for refs in references]
    df = _document_frequency(ref_counts)
    log_num_images = math.log(float(len(hypotheses)))
    scores = []
    for hyp, refs in zip(hypotheses, ref_counts, strict=True):
        hyp_vec = _tfidf(ngram_counts(hyp.split(), n), df, log_num_images, n)
        total = np.zeros(n)
        for counts in refs:
            total += _similarity(hyp_vec, _tfidf(counts, df, log_num_images, n), n, sigma)
        scores.append(float(np.mean(total)) / len(refs) * 10.0)
    return float(np.mean(scores)), scores
