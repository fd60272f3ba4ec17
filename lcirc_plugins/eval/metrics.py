"""Official-style QA metrics (SQuAD / LongBench / InfiniteBench / L-Eval conventions).

* :func:`normalize_answer`: lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace
  (SQuAD's ``normalize_answer``, which LongBench's ``qa_f1_score`` reuses).
* :func:`f1_score`: token-level F1 between normalised prediction and reference (bag of tokens).
* :func:`exact_match`: 1.0 when the normalised strings are equal.
* :func:`rouge_l`: ROUGE-L F-measure from the longest common subsequence of tokens (beta = 1 by default).
* :func:`multiple_choice_accuracy`: the letter A-D a prediction chooses, compared with the gold letter.
* :func:`substring_match`: passkey / needle scoring; ``"all"`` or ``"any"`` of the answers must appear.

Every metric that takes ``references`` accepts one string or several and returns the best score over them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, remove punctuation, remove articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _refs(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("at least one reference answer is needed")
    return refs


def _f1_one(prediction: str, reference: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, references: str | Sequence[str]) -> float:
    """Token F1 after normalisation; the best over ``references``."""
    return max(_f1_one(prediction, r) for r in _refs(references))


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in _refs(references)))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _rouge_l_one(prediction: str, reference: str, beta: float) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not gold:
        return float(pred == gold)
    lcs = _lcs(pred, gold)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(gold)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(prediction: str, references: str | Sequence[str], beta: float = 1.0) -> float:
    """ROUGE-L F-measure on normalised tokens: P = LCS/|pred|, R = LCS/|ref|, F = (1+b^2)PR/(R+b^2 P)."""
    return max(_rouge_l_one(prediction, r, beta) for r in _refs(references))


_CHOICE_PATTERNS = (
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-D])\b", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-D])[\).:\s]"),
    re.compile(r"^\s*\(?([A-D])\)?[.\s]*$", re.IGNORECASE),
    re.compile(r"\(([A-D])\)"),
    re.compile(r"\b([A-D])\b"),
)


def extract_choice(prediction: str) -> str | None:
    """The letter A-D a free-text prediction chooses ("Answer: (B)", "C. Paris", "B"), or None."""
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(prediction)
        if match:
            return match.group(1).upper()
    return None


def multiple_choice_accuracy(prediction: str, gold: str) -> float:
    """1.0 when the letter extracted from ``prediction`` equals ``gold`` (a letter A-D)."""
    return float(extract_choice(prediction) == gold.strip().upper())


def substring_match(prediction: str, answers: str | Sequence[str], match: str = "any") -> float:
    """Passkey / needle scoring: ``"any"`` answer (or ``"all"`` of them) occurs in the prediction (case-insensitive)."""
    refs = [a.lower() for a in _refs(answers)]
    text = prediction.lower()
    if match == "all":
        return float(all(a in text for a in refs))
    if match == "any":
        return float(any(a in text for a in refs))
    raise ValueError(f"match must be 'all' or 'any', got {match!r}")
