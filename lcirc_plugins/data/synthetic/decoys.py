"""Decoys: a pass key hidden in an example whose question asks for something else.

Why: an adapter trained only on examples whose answer is the most salient thing in its memory learns to
answer every question with that thing (a retrained 9-layer reader gave the pass key to "Who is the
captain?"). The same example with an unasked pass key beside its evidence teaches the readers to read
what the question asks for, not whatever stands out.
"""

from __future__ import annotations

import dataclasses
import random

from .examples import LongContextExample
from .insertion import _insert


def decoy_sentence(key: str) -> str:
    """The pass-key sentence a decoy hides: the pass-key task's own wording, so the key is as salient as one asked for."""
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def with_decoy_passkey(example: LongContextExample, seed: int, digits: int = 5) -> LongContextExample:
    """``example`` with "The pass key is N. Remember it. N is the pass key." at a random sentence start.

    The question and answers are unchanged; evidence spans after the decoy move with the text. The decoy
    never splits an evidence sentence and its number is in no answer. ``metadata["decoy"]`` holds the
    decoy sentence and ``metadata["decoy_span"]`` where it went.
    """
    if example.task == "passkey":
        raise ValueError("a pass-key example cannot take a decoy pass key: its question would have two answers")
    rng = random.Random(seed)
    for _ in range(32):
        key = str(rng.randrange(10 ** (digits - 1), 10**digits))
        if key in example.context or any(key in answer for answer in example.answers):
            continue
        decoy = decoy_sentence(key)
        context, [(start, end)] = _insert(example.context, [(decoy, rng.random())])
        if any(s < start < e for s, e in example.evidence_spans):
            continue  # inside an evidence sentence
        shift = len(context) - len(example.context)  # everything from the decoy on moved by what was inserted
        spans = tuple((s + shift, e + shift) if s >= start else (s, e) for s, e in example.evidence_spans)
        metadata = {**example.metadata, "decoy": decoy, "decoy_span": [start, end]}
        return dataclasses.replace(example, context=context, evidence_spans=spans, metadata=metadata)
    raise ValueError(f"no place for a decoy pass key in example {example.metadata.get('seed')}")
