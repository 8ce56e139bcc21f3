"""ROUGE-L exactly as pycocoevalcap's ``Rouge()`` (``rouge.py``): LCS F-measure with beta = 1.2.

Quirks kept: words are ``split(" ")`` pieces (an empty caption is one empty word), and precision and
recall are maximised over the references *separately* before they are combined.
"""

from __future__ import annotations

from collections.abc import Sequence

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two word lists."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if word == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, references: Sequence[str], beta: float = BETA) -> float:
    """One image's ROUGE-L in [0, 1] from pre-tokenized strings."""
    if not references:
        raise ValueError("ROUGE-L needs at least one reference")
    words = hypothesis.split(" ")
    precisions, recalls = [], []
    for reference in references:
        ref_words = reference.split(" ")
        lcs = lcs_length(ref_words, words)
        precisions.append(lcs / float(len(words)))
        recalls.append(lcs / float(len(ref_words)))
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / float(r + beta**2 * p)
