"""Evaluation harness: QA metrics, analytic FLOPs, compared systems, perplexity and needle tasks, reports."""

from .flops import DecoderShape, flops_full, flops_lcirc, flops_truncated
from .metrics import exact_match, f1_score, multiple_choice_accuracy, normalize_answer, rouge_l, substring_match

__all__ = [
    "DecoderShape",
    "exact_match",
    "f1_score",
    "flops_full",
    "flops_lcirc",
    "flops_truncated",
    "multiple_choice_accuracy",
    "normalize_answer",
    "rouge_l",
    "substring_match",
]
