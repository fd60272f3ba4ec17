"""Putting evidence into a haystack at a controlled depth, snapped to a sentence start, and recording where it went."""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Sequence
from typing import Any

from .examples import Tokenizer
from .haystacks import _ABBREVIATIONS, _PARAGRAPH_BREAK, _SENTENCE_END, _TOKEN_TOLERANCE, _cut, _random_start, count_tokens


def _sentence_starts(text: str) -> list[int]:
    """Sorted offsets where a sentence or paragraph starts, plus 0 and ``len(text)``: where needles go."""
    starts = {0, len(text)}
    for m in _SENTENCE_END.finditer(text):
        word = re.search(r"(\w+)\W*$", text[max(0, m.start() - 12) : m.start() + 1])
        if word:  # "Mr. Smith", "S.L.O.", a numbered contents line "17. ..." do not end a sentence
            w = word.group(1)
            if w.lower() in _ABBREVIATIONS or w.isdigit() or (len(w) == 1 and w.isupper()):
                continue
        starts.add(m.end())
    starts.update(m.end() for m in _PARAGRAPH_BREAK.finditer(text) if m.end() < len(text))
    return sorted(starts)


def _insert(haystack: str, needles: Sequence[tuple[str, float]]) -> tuple[str, list[tuple[int, int]]]:
    """Insert each (sentence, depth) at the sentence start nearest ``depth * len(haystack)``.

    Returns the context and the span of every needle, in the order the needles were given.
    """
    starts = _sentence_starts(haystack)
    places = []
    for _, depth in needles:
        target = depth * len(haystack)
        i = bisect.bisect_left(starts, target)
        nearby = starts[max(0, i - 1) : i + 1]
        places.append(min(nearby, key=lambda p: (abs(p - target), p)))
    out: list[str] = []
    size, prev, last_char = 0, 0, ""
    spans: list[tuple[int, int]] = [(0, 0)] * len(needles)
    for j in sorted(range(len(needles)), key=lambda j: (places[j], j)):
        place, sentence = places[j], needles[j][0]
        if place > prev:
            out.append(haystack[prev:place])
            size += place - prev
            last_char = haystack[place - 1]
            prev = place
        if place < len(haystack):
            out.append(sentence + " ")
            spans[j] = (size, size + len(sentence))
            size += len(sentence) + 1
            last_char = " "
        else:  # at the very end
            sep = "" if not last_char or last_char.isspace() else " "
            out.append(sep + sentence)
            spans[j] = (size + len(sep), size + len(sep) + len(sentence))
            size += len(sep) + len(sentence)
            last_char = sentence[-1]
    out.append(haystack[prev:])
    return "".join(out), spans


def _build(
    rng: random.Random,
    source: str,
    needles: Sequence[tuple[str, float]],
    length_chars: int | None,
    num_tokens: int | None,
    tokenizer: Tokenizer | None,
) -> tuple[str, list[tuple[int, int]]]:
    """Cut a haystack from ``source`` so that, with the needles inserted, the context has the asked length."""
    start = _random_start(source, rng)
    if num_tokens is None:
        assert length_chars is not None
        budget = length_chars - sum(len(n) + 1 for n, _ in needles)
        if budget <= 0:
            raise ValueError(f"length_chars={length_chars} leaves no room for a haystack around the needles")
        return _insert(_cut(source, start, budget, None, None), needles)
    assert tokenizer is not None
    budget = num_tokens - sum(count_tokens(" " + n, tokenizer) for n, _ in needles)
    for _ in range(4):  # token merges at the insertion points shift the count a little; correct for it
        if budget <= 0:
            raise ValueError(f"num_tokens={num_tokens} leaves no room for a haystack around the needles")
        context, spans = _insert(_cut(source, start, None, budget, tokenizer), needles)
        got = count_tokens(context, tokenizer)
        if abs(got - num_tokens) <= max(1, _TOKEN_TOLERANCE * num_tokens):
            break
        budget += num_tokens - got
    return context, spans


def _check_depth(depth: float) -> float:
    depth = float(depth)
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    return depth


def _depths(rng: random.Random, depths: float | Sequence[float] | None, n: int, name: str = "depths") -> list[float]:
    """``n`` depths: the given ones (one float is used for every needle), else uniform random ones."""
    if depths is None:
        return [rng.random() for _ in range(n)]
    if isinstance(depths, (int, float)):
        return [_check_depth(depths)] * n
    depths = [_check_depth(d) for d in depths]
    if len(depths) != n:
        raise ValueError(f"{name} has {len(depths)} values for {n} needles")
    return depths


def _length_metadata(length_chars: int | None, num_tokens: int | None) -> dict[str, Any]:
    return {"length_chars": length_chars} if num_tokens is None else {"num_tokens": num_tokens}


def _actual_depths(context: str, spans: Sequence[tuple[int, int]]) -> list[float]:
    return [s / len(context) for s, _ in spans]
