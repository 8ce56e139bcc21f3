"""A generated length mix shaped like LLaVA-1.5's llava_v1_5_mix665k (the Yi-VL stage-3 data shape).

Counts are the mix's published composition (LLaVA-1.5, table 7); text lengths are Llama-tokenizer
tokens of the whole rendered conversation without the image, drawn from a log-normal per source
(median, sigma) and clipped, with the Yi-VL system prompt added. They are modelled, not measured on
the real files (nothing is downloaded): multi-question sources are LLaVA-1.5's grouping of all
questions of one image into one conversation. ``supervised`` is the fraction of text tokens that are
assistant replies. ``estimate`` is what the map-style sampler groups by (record bytes / 4, i.e. the
tokens times a per-record bytes-per-token noise), to length-group the way yivl does without tokenizing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SYSTEM_TOKENS = 60  # Yi-VL's system prompt and the first "### Human: " in Llama tokens


@dataclass(frozen=True)
class Source:
    name: str
    count: int
    image: bool
    median: float  # text tokens, rendered conversation without the image
    sigma: float
    low: int
    high: int
    supervised: float


MIX665K = (
    Source("LLaVA-Instruct (conversation, detail, reasoning)", 158_000, True, 260, 0.55, 40, 2000, 0.70),
    Source("ShareGPT (text only)", 40_000, False, 900, 0.90, 40, 3500, 0.75),
    Source("VQAv2 (multi-question, short answers)", 83_000, True, 140, 0.45, 30, 700, 0.10),
    Source("GQA (multi-question, short answers)", 72_000, True, 230, 0.45, 30, 900, 0.10),
    Source("OKVQA (short answers)", 9_000, True, 70, 0.35, 25, 300, 0.12),
    Source("A-OKVQA (multiple choice)", 66_000, True, 110, 0.30, 40, 400, 0.05),
    Source("OCR-VQA (multi-question)", 80_000, True, 160, 0.30, 40, 500, 0.15),
    Source("TextCaps (one caption)", 22_000, True, 60, 0.25, 30, 160, 0.40),
    Source("RefCOCO (region <-> box, multi)", 48_000, True, 300, 0.50, 40, 1200, 0.35),
    Source("Visual Genome (region captions, multi)", 86_000, True, 250, 0.50, 40, 1100, 0.40),
)


@dataclass
class Mix:
    """One generated epoch: per sample ``text`` tokens, ``images`` (0/1), ``supervised`` tokens, the
    sampler's ``estimate``, and ``source`` (index into the source list)."""

    text: np.ndarray
    images: np.ndarray
    supervised: np.ndarray
    estimate: np.ndarray
    source: np.ndarray

    def lengths(self, image_tokens: int) -> np.ndarray:
        """Tokens the LLM sees per sample: text plus each image's features (minus its placeholder)."""
        return self.text + self.images * (image_tokens - 1)


def generate(scale: float = 1.0, seed: int = 0, sources: tuple[Source, ...] = MIX665K) -> Mix:
    """``scale`` x the mix's counts, shuffled."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, s in enumerate(sources):
        n = max(1, round(s.count * scale))
        text = np.clip(rng.lognormal(np.log(s.median), s.sigma, n), s.low, s.high).astype(np.int64)
        text += SYSTEM_TOKENS + int(s.image)
        sup = np.maximum(1, (text * s.supervised).astype(np.int64))
        noise = rng.lognormal(0.0, 0.15, n)  # bytes per token varies by record
        est = (text * noise).astype(np.int64)
        parts.append((text, np.full(n, int(s.image)), sup, est, np.full(n, k)))
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    order = rng.permutation(len(cols[0]))
    return Mix(*(c[order] for c in cols))


def describe(mix: Mix, sources: tuple[Source, ...] = MIX665K) -> list[str]:
    """Markdown rows: source, samples, image, text tokens p10/p50/p90, supervised share."""
    rows = []
    for k, s in enumerate(sources):
        t = mix.text[mix.source == k]
        p10, p50, p90 = np.percentile(t, [10, 50, 90]).astype(int)
        image = "yes" if s.image else "no"
        rows.append(f"| {s.name} | {len(t):,} | {image} | {p10} / {p50} / {p90} | {s.supervised:.0%} |")
    return rows
