"""Metric functions and answer parsers for ``evaluate.py``: pure Python, no model, no network.

One module per family; docs/metrics.md states each definition and where it follows or deviates
from the official scorer.
"""

from yivl.evaluation.metrics.bleu import bleu_stats, corpus_bleu
from yivl.evaluation.metrics.captions import (
    CAPTION_TOKENIZERS,
    CaptionResult,
    score_captions,
    tokenize_captions,
)
from yivl.evaluation.metrics.cider import cider_d
from yivl.evaluation.metrics.mcq import (
    choice_letters,
    circular_accuracy,
    extract_choice,
    pick_by_likelihood,
    summarize_mcq,
)
from yivl.evaluation.metrics.mme import COGNITION, PERCEPTION, mme_subtask, summarize_mme
from yivl.evaluation.metrics.mmmu import eval_mmmu_open, parse_mmmu_choice, parse_mmmu_open
from yivl.evaluation.metrics.pope import pope_scores, summarize_pope
from yivl.evaluation.metrics.ptb import ptb_tokenize, ptb_tokenize_java
from yivl.evaluation.metrics.rouge import rouge_l
from yivl.evaluation.metrics.stderr import bootstrap_replicates, bootstrap_stderr, mean_stderr
from yivl.evaluation.metrics.summary import TaskMetrics
from yivl.evaluation.metrics.vqa import VQA_NORMS, VqaScore, leave_one_out_accuracy, score_vqa, summarize_vqa
from yivl.evaluation.metrics.vqa_norm import evalai_normalize, official_normalize
from yivl.evaluation.metrics.yesno import normalize_label, parse_mme, parse_pope, yesno_word

__all__ = [
    "CAPTION_TOKENIZERS",
    "COGNITION",
    "PERCEPTION",
    "VQA_NORMS",
    "CaptionResult",
    "TaskMetrics",
    "VqaScore",
    "bleu_stats",
    "bootstrap_replicates",
    "bootstrap_stderr",
    "choice_letters",
    "cider_d",
    "circular_accuracy",
    "corpus_bleu",
    "eval_mmmu_open",
    "evalai_normalize",
    "extract_choice",
    "leave_one_out_accuracy",
    "mean_stderr",
    "mme_subtask",
    "normalize_label",
    "official_normalize",
    "parse_mme",
    "parse_mmmu_choice",
    "parse_mmmu_open",
    "parse_pope",
    "pick_by_likelihood",
    "pope_scores",
    "ptb_tokenize",
    "ptb_tokenize_java",
    "rouge_l",
    "score_captions",
    "score_vqa",
    "summarize_mcq",
    "summarize_mme",
    "summarize_pope",
    "summarize_vqa",
    "tokenize_captions",
    "yesno_word",
]
