"""Source passages of a compressed memory, and ranking them for a question.

Every memory segment is a passage: its text is decoded from the memory's own token ids (no copy of the
source is kept) and its character span points back into the source. Ranking is Okapi BM25 over the
passages: it needs no trained adapter, runs in milliseconds on a CPU, and finds the passage that states
a fact asked about by its words, which is what a user checking an answer's source wants. Integrations
(LlamaIndex, LangChain, the app) all rank through :func:`rank_passages`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from .memory import CompressedMemory

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "his", "how", "i", "in", "is", "it", "its", "of", "on", "or", "she", "that", "the", "their", "them", "they", "this", "to", "was", "were", "what", "when", "where", "which", "who", "whom", "why", "will", "with", "you", "your"]
)


@dataclass(frozen=True)
class Passage:
    """One segment of a memory: its text, character span in the source, and relevance score."""

    segment: int
    text: str
    start: int
    end: int
    score: float = 0.0


def words(text: str) -> list[str]:
    """Lower-cased word tokens without stop words: the unit BM25 counts."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def passages(memory: CompressedMemory, tokenizer: PreTrainedTokenizerBase) -> list[Passage]:
    """All segments of ``memory`` as passages, in source order."""
    ids = memory.token_ids.tolist()
    length = memory.segment_len
    return [
        Passage(i, tokenizer.decode(ids[i * length : (i + 1) * length]), int(start), int(end))
        for i, (start, end) in enumerate(memory.spans.tolist())
    ]


def bm25_scores(query: str, documents: list[str], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 score of every document for ``query``."""
    counts = [Counter(words(d)) for d in documents]
    lengths = [sum(c.values()) for c in counts]
    average = sum(lengths) / max(1, len(lengths)) or 1.0
    n = len(documents)
    scores = [0.0] * n
    for term in set(words(query)):
        frequency = sum(1 for c in counts if term in c)
        if frequency == 0:
            continue
        idf = math.log(1 + (n - frequency + 0.5) / (frequency + 0.5))
        for i, c in enumerate(counts):
            tf = c.get(term, 0)
            if tf:
                scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / average))
    return scores


def best_first(scores: list[float], k: int) -> list[int]:
    """Indices of the ``k`` highest ``scores``, best first; ties keep source order (every BM25 ranking here)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def rank_passages(memory: CompressedMemory, tokenizer: PreTrainedTokenizerBase, query: str, top_k: int = 3) -> list[Passage]:
    """The ``top_k`` passages of ``memory`` most relevant to ``query``, best first (ties keep source order)."""
    candidates = passages(memory, tokenizer)
    scores = bm25_scores(query, [p.text for p in candidates])
    order = best_first(scores, top_k)
    return [Passage(candidates[i].segment, candidates[i].text, candidates[i].start, candidates[i].end, scores[i]) for i in order]
