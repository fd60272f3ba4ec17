"""Evaluation harness: QA metrics, benchmark loaders, analytic FLOPs, compared systems, tasks, reports."""

from .datasets import QARecord, load_benchmark
from .flops import DecoderShape, flops_full, flops_lcirc, flops_truncated
from .metrics import exact_match, f1_score, multiple_choice_accuracy, normalize_answer, rouge_l, rouge_n, substring_match

__all__ = [
    "DecoderShape",
    "QARecord",
    "exact_match",
    "f1_score",
    "flops_full",
    "flops_lcirc",
    "flops_truncated",
    "load_benchmark",
    "multiple_choice_accuracy",
    "normalize_answer",
    "rouge_l",
    "rouge_n",
    "substring_match",
]
