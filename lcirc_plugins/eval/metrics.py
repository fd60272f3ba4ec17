"""Official-style QA metrics (SQuAD / LongBench / InfiniteBench / L-Eval conventions).

* :func:`normalize_answer`: lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace
  (SQuAD's ``normalize_answer``, which LongBench's ``qa_f1_score`` reuses).
* :func:`f1_score`: token-level F1 between normalised prediction and reference (bag of tokens).
* :func:`exact_match`: 1.0 when the normalised strings are equal.
* :func:`rouge_l`: ROUGE-L F-measure from the longest common subsequence of tokens (beta = 1 by default).
* :func:`multiple_choice_accuracy`: the letter A-D a prediction chooses, compared with the gold letter.
* :func:`substring_match`: passkey / needle scoring; ``"all"`` or ``"any"`` of the answers must appear.
* :func:`rouge_n`: ROUGE-1/2 F-measure on the same normalised tokens (L-Eval reports the geometric mean of
  ROUGE-1, ROUGE-2 and ROUGE-L).
* :func:`f1_score_zh`, :func:`rouge_l_zh`: character-level versions for Chinese (InfiniteBench's Chinese F1 is
  character-level; LongBench segments words with jieba, which is not a dependency here, so its Chinese scores
  are approximated by characters).
* :func:`classification_score`, :func:`retrieval_score`, :func:`count_score`, :func:`code_sim_score`: LongBench's
  scorers for its classification, passage retrieval, passage count and code completion sets.
* :func:`first_integer`: the first run of digits, InfiniteBench's passkey / number_string extraction.

Every metric that takes ``references`` accepts one string or several and returns the best score over them.
"""

from __future__ import annotations

import difflib
import math
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


def rouge_n(prediction: str, references: str | Sequence[str], n: int = 1) -> float:
    """ROUGE-N F-measure on normalised tokens: clipped n-gram overlap over |pred n-grams| and |ref n-grams|."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    def grams(text: str) -> Counter[tuple[str, ...]]:
        tokens = normalize_answer(text).split()
        return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))

    def one(reference: str) -> float:
        pred, gold = grams(prediction), grams(reference)
        overlap = sum((pred & gold).values())
        if overlap == 0:
            return 0.0
        precision, recall = overlap / sum(pred.values()), overlap / sum(gold.values())
        return 2 * precision * recall / (precision + recall)

    return max(one(r) for r in _refs(references))


def rouge_mean(prediction: str, references: str | Sequence[str]) -> float:
    """Geometric mean of ROUGE-1, ROUGE-2 and ROUGE-L, each the best over ``references`` (L-Eval's score)."""
    parts = (rouge_n(prediction, references, 1), rouge_n(prediction, references, 2), rouge_l(prediction, references))
    return math.prod(parts) ** (1 / 3)


# Full-width and CJK punctuation LongBench and InfiniteBench strip besides ASCII punctuation.
_ZH_PUNCT = set(string.punctuation) | set(
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏"
)


def normalize_zh(text: str) -> str:
    """Chinese normalisation: lower-case, drop ASCII and CJK punctuation, drop all whitespace."""
    return "".join(ch for ch in text.lower() if ch not in _ZH_PUNCT and not ch.isspace())


def f1_score_zh(prediction: str, references: str | Sequence[str]) -> float:
    """Character-level F1 after :func:`normalize_zh`; the best over ``references``."""

    def one(reference: str) -> float:
        pred, gold = list(normalize_zh(prediction)), list(normalize_zh(reference))
        common = sum((Counter(pred) & Counter(gold)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred), common / len(gold)
        return 2 * precision * recall / (precision + recall)

    return max(one(r) for r in _refs(references))


def rouge_l_zh(prediction: str, references: str | Sequence[str]) -> float:
    """ROUGE-L F-measure over the characters of :func:`normalize_zh` text; the best over ``references``."""

    def one(reference: str) -> float:
        pred, gold = list(normalize_zh(prediction)), list(normalize_zh(reference))
        lcs = _lcs(pred, gold) if pred and gold else 0
        if lcs == 0:
            return 0.0
        precision, recall = lcs / len(pred), lcs / len(gold)
        return 2 * precision * recall / (precision + recall)

    return max(one(r) for r in _refs(references))


def first_integer(text: str) -> str | None:
    """The first run of ASCII digits in ``text`` ("key 0712, not 5" -> "0712"), or None."""
    match = re.search(r"[0-9]+", text)
    return match.group(0) if match else None


def count_score(prediction: str, gold: str) -> float:
    """LongBench passage_count: the share of the numbers in ``prediction`` that equal ``gold``."""
    numbers = re.findall(r"\d+", prediction)
    return sum(number == str(gold) for number in numbers) / len(numbers) if numbers else 0.0


def retrieval_score(prediction: str, gold: str, label: str = "Paragraph") -> float:
    """LongBench passage_retrieval: ``gold`` is "Paragraph 7" ("段落7" with ``label="段落"``); the share of the
    numbers in ``prediction`` that equal 7."""
    match = re.search(re.escape(label) + r"\s*(\d+)", gold)
    if match is None:
        raise ValueError(f"reference {gold!r} does not name a {label} number")
    return count_score(prediction, match.group(1))


def classification_score(prediction: str, gold: str, all_classes: Sequence[str]) -> float:
    """LongBench trec / lsht: the classes named in ``prediction`` (ignoring classes that are only part of the
    gold class's name); 1/k when the gold class is one of the k named, else 0."""
    named = [c for c in all_classes if c in prediction and not (c in gold and c != gold)]
    return 1.0 / len(named) if gold in named else 0.0


def code_sim_score(prediction: str, gold: str) -> float:
    """LongBench lcc / repobench-p: similarity of the first generated code line (skipping lines with a backtick
    or a comment mark) to the gold line, as difflib's ratio in [0, 1] (LongBench uses fuzzywuzzy's ratio,
    the same measure rounded to whole percents)."""
    lines = prediction.lstrip("\n").split("\n")
    first = next((line for line in lines if "`" not in line and "#" not in line and "//" not in line), "")
    return difflib.SequenceMatcher(None, first, gold).ratio()
