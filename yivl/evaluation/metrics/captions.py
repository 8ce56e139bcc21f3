"""Caption metrics like pycocoevalcap's ``COCOEvalCap``: tokenize, then BLEU-1..4, CIDEr-D and ROUGE-L.

Scores are on pycocoevalcap's own scale (BLEU and ROUGE-L in [0, 1], CIDEr-D around 0-3; papers
multiply by 100). METEOR and SPICE need Java jars and models and are not computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yivl.errors import YivlError
from yivl.evaluation.metrics.bleu import bleu_stats, corpus_bleu
from yivl.evaluation.metrics.cider import cider_d
from yivl.evaluation.metrics.ptb import ptb_tokenize, ptb_tokenize_java
from yivl.evaluation.metrics.rouge import rouge_l
from yivl.evaluation.metrics.stderr import (
    DEFAULT_BOOTSTRAP_ITERS,
    bootstrap_replicates,
    mean_stderr,
    resample,
)
from yivl.evaluation.metrics.summary import TaskMetrics

CAPTION_TOKENIZERS = ("python", "java", "none")
BLEU_NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")


@dataclass
class CaptionResult:
    """Corpus metrics plus the per-image CIDEr-D and ROUGE-L scores (in input order)."""

    metrics: TaskMetrics
    cider: list[float]
    rouge_l: list[float]


def tokenize_captions(
    texts: Sequence[str], tokenizer: str = "python", jar: str | Path | None = None
) -> list[str]:
    """Apply the chosen preprocessing: ``python`` (``ptb_tokenize``), ``java`` (the real jar) or ``none``."""
    if tokenizer == "python":
        return [ptb_tokenize(t) for t in texts]
    if tokenizer == "java":
        if jar is None:
            raise YivlError("tokenizer=java needs the path of stanford-corenlp-3.4.1.jar")
        return ptb_tokenize_java(texts, jar)
    if tokenizer == "none":
        return list(texts)
    raise YivlError(f"unknown caption tokenizer {tokenizer!r}; choose one of {', '.join(CAPTION_TOKENIZERS)}")


def score_captions(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenizer: str = "python",
    jar: str | Path | None = None,
    iters: int = DEFAULT_BOOTSTRAP_ITERS,
    seed: int = 0,
) -> CaptionResult:
    """Score one caption per image against that image's references (raw text, tokenized here).

    Stderrs: BLEU by a bootstrap over images on the summed statistics; CIDEr-D and ROUGE-L
    analytically from the per-image scores (the CIDEr-D document frequencies stay those of the
    full set).
    """
    _check_inputs(hypotheses, references)
    flat_refs = [r for refs in references for r in refs]
    hyps = tokenize_captions(hypotheses, tokenizer, jar)
    tokens = iter(tokenize_captions(flat_refs, tokenizer, jar))
    refs = [[next(tokens) for _ in image_refs] for image_refs in references]
    stats = np.stack([bleu_stats(h, r) for h, r in zip(hyps, refs, strict=True)])
    cider, cider_per_image = cider_d(hyps, refs)
    rouge_per_image = [rouge_l(h, r) for h, r in zip(hyps, refs, strict=True)]
    values = dict(zip(BLEU_NAMES, corpus_bleu(stats), strict=True))
    values.update({"cider": cider, "rouge_l": float(np.mean(rouge_per_image))})
    errors: dict[str, float | None] = {
        "cider": mean_stderr(cider_per_image),
        "rouge_l": mean_stderr(rouge_per_image),
    }
    errors.update(_bleu_stderr(stats, iters, seed))
    metrics = TaskMetrics(main="cider", values=values, stderr=errors, n=len(hyps))
    metrics.notes["caption_tokenizer"] = tokenizer
    return CaptionResult(metrics=metrics, cider=cider_per_image, rouge_l=rouge_per_image)


def _check_inputs(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """One reference list per hypothesis, none empty, and at least one image."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("no captions to score")
    for index, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise YivlError(
                f"caption sample #{index}: 'captions' must be a non-empty list of reference strings"
            )


def _bleu_stderr(stats: np.ndarray, iters: int, seed: int) -> dict[str, float | None]:
    """Bootstrap stderrs of BLEU-1..4 (None for a single image)."""
    if len(stats) < 2:
        return dict.fromkeys(BLEU_NAMES)
    replicates = bootstrap_replicates(lambda rng: corpus_bleu(stats[resample(rng, len(stats))]), iters, seed)
    return {name: float(err) for name, err in zip(BLEU_NAMES, replicates.std(axis=0, ddof=1), strict=True)}
