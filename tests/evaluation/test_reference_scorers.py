"""Cross-checks against pycocoevalcap itself (optional: skipped unless the package is installed).

pycocoevalcap is a test-only reference, never a runtime dependency. Its Bleu/Cider/Rouge scorers are
pure Python and take pre-tokenized text; its PTBTokenizer needs Java, so that check also needs a
``java`` on PATH.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from yivl.evaluation.metrics import ptb_tokenize, ptb_tokenize_java, score_captions

pytestmark = pytest.mark.slow

VOCAB = ["a", "an", "the", "man", "woman", "dog", "cat", "on", "in", "with", "riding", "sitting"]
VOCAB += ["red", "blue", "table", "street", "of", "next", "to"]
CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing with a frisbee in the park",
    "The cat is sitting on the laptop's keyboard.",
    "A red, white and blue bus parked on the street.",
    "Is this a cat? No, it's a dog.",
    "A sign that reads 'Do not enter'.",
    "A baseball player swinging a bat at a ball (in a stadium).",
    "A train traveling down tracks next to a forest...",
    "A clock reading 3:45pm on a wall.",
    "A 2-year-old girl eating a donut.",
    "A street sign for St. James Ave. at an intersection.",
    "A man wearing a hat and sunglasses -- smiling.",
    "People watching a T.V. in the living room.",
    "a bathroom with a toilet , sink , and mirror",
    "They're playing tennis; we'll watch. I'd say it's fun!",
    "The dogs won't stop barking, and the boy can't sleep.",
    "A Boeing 747 on the runway at J.F.K. airport.",
    "A 50% off sale sign; a price tag showing $9.99.",
    "A #1 jersey on a player from the '80s.",
    'A teddy bear wearing a "Happy Birthday" hat.',
    "A man with a tie, e.g. a businessman, at approx. 5 pm.",
    "A cat, a dog, etc. in a room. What a view!! Surfing?!",
    "The clock says it is 12 o'clock.",
    "A woman in a red dress [blurry] with {candles}.",
    "A dog on a skateboard.The dog is happy.",
]


def _random_corpus(rng: random.Random) -> tuple[list[str], list[list[str]]]:
    """1-12 images of random words; some empty hypotheses, 1-5 references each."""
    n = rng.randint(1, 12)
    hyps = [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, 12))) for _ in range(n)]
    refs = [
        [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 5))]
        for _ in range(n)
    ]
    return hyps, refs


def test_scorers_equal_pycocoevalcap() -> None:
    bleu_mod = pytest.importorskip("pycocoevalcap.bleu.bleu")
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    rouge_mod = pytest.importorskip("pycocoevalcap.rouge.rouge")
    rng = random.Random(0)
    for _ in range(100):
        hyps, refs = _random_corpus(rng)
        gts, res = dict(enumerate(refs)), {i: [h] for i, h in enumerate(hyps)}
        bleu, _ = bleu_mod.Bleu(4).compute_score(gts, res, verbose=0)
        cider, _ = cider_mod.Cider().compute_score(gts, res)
        rouge, _ = rouge_mod.Rouge().compute_score(gts, res)
        ours = score_captions(hyps, refs, tokenizer="none", iters=2).metrics.values
        expected = [*bleu, cider, rouge]
        got = [ours[k] for k in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider", "rouge_l")]
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_python_tokenizer_equals_java_ptb() -> None:
    tokenizer_mod = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH")
    jar = Path(tokenizer_mod.__file__).parent / "stanford-corenlp-3.4.1.jar"
    assert ptb_tokenize_java(CAPTIONS, jar) == [ptb_tokenize(c) for c in CAPTIONS]
