"""Retrieval tasks: the classic pass key, and RULER's needle-in-a-haystack variants."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from .examples import LongContextExample, Tokenizer
from .haystacks import _MAX_TRIES, FILLER, _as_text, _check_length
from .insertion import _actual_depths, _build, _check_depth, _depths, _length_metadata


def passkey(
    seed: int,
    *,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    depth: float | None = None,
    haystack: str | os.PathLike[str] | None = None,
    digits: int = 5,
) -> LongContextExample:
    """The pass-key retrieval task: "The pass key is 71432. Remember it. 71432 is the pass key." in filler.

    The filler is the standard repeated "The grass is green. ..." (no information, so it measures pure
    retrieval), or real text when ``haystack`` is given. ``depth`` in [0, 1]; random when ``None``.
    """
    _check_length(length_chars, num_tokens, tokenizer)
    rng = random.Random(seed)
    d = rng.random() if depth is None else _check_depth(depth)
    source = FILLER if haystack is None else _as_text(haystack)
    for _ in range(_MAX_TRIES):
        key = str(rng.randrange(10 ** (digits - 1), 10**digits))
        needle = f"The pass key is {key}. Remember it. {key} is the pass key."
        context, spans = _build(rng, source, [(needle, d)], length_chars, num_tokens, tokenizer)
        if context.count(key) == 2:  # the number is nowhere else in a real haystack
            break
    return LongContextExample(
        context=context,
        question="What is the pass key?",
        answer=key,
        answers=(key,),
        task="passkey",
        depth=d,
        evidence_spans=(spans[0],),
        metadata={
            "seed": seed,
            "match": "any",
            "filler": "standard" if haystack is None else "haystack",
            "depths": [d],
            "evidence_depths": _actual_depths(context, spans),
            **_length_metadata(length_chars, num_tokens),
        },
    )


# Keys are adjective-noun pairs ("amber-lantern"), as RULER's word keys; 60 x 60 = 3,600 distinct keys.
ADJECTIVES = (
    "amber", "ancient", "bitter", "brave", "brisk", "calm", "clever", "crimson", "curious", "dusty",
    "eager", "elegant", "faint", "fancy", "fierce", "fragile", "gentle", "gilded", "glossy", "grumpy",
    "hollow", "humble", "icy", "jolly", "keen", "lively", "lucky", "mellow", "misty", "modest",
    "nimble", "noisy", "odd", "pale", "patient", "plain", "polite", "proud", "quiet", "rapid",
    "rusty", "salty", "scarlet", "shiny", "silent", "silver", "sleepy", "smoky", "solemn", "spicy",
    "stormy", "sturdy", "subtle", "tame", "tidy", "velvet", "vivid", "wary", "witty", "zealous",
)  # fmt: skip
NOUNS = (
    "anchor", "apricot", "badger", "banner", "barrel", "basket", "beacon", "bicycle", "blanket", "bucket",
    "candle", "canyon", "carpet", "castle", "cello", "chimney", "compass", "cottage", "crystal", "dolphin",
    "falcon", "feather", "fiddle", "garden", "glacier", "goblet", "harbor", "helmet", "island", "kettle",
    "ladder", "lantern", "lemon", "meadow", "mirror", "otter", "paddle", "parcel", "pebble", "pepper",
    "pillow", "quarry", "raven", "ribbon", "saddle", "satchel", "shovel", "spindle", "teapot", "thimble",
    "tiger", "trumpet", "tunnel", "turnip", "valley", "violin", "wagon", "walnut", "whistle", "window",
)  # fmt: skip

NEEDLE_TEMPLATE = "One of the special magic numbers for {key} is: {value}."


def _keys(rng: random.Random, n: int) -> list[str]:
    picks = rng.sample(range(len(ADJECTIVES) * len(NOUNS)), n)
    return [f"{ADJECTIVES[i // len(NOUNS)]}-{NOUNS[i % len(NOUNS)]}" for i in picks]


def _join_keys(keys: Sequence[str]) -> str:
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]


def _niah(
    seed: int,
    task: str,
    haystack: str | os.PathLike[str],
    *,
    num_queries: int,
    values_per_key: int,
    num_distractors: int,
    depths: float | Sequence[float] | None,
    length_chars: int | None,
    num_tokens: int | None,
    tokenizer: Tokenizer | None,
) -> LongContextExample:
    """Shared RULER needle machinery: asked keys with their values, plus distractor keys never asked."""
    _check_length(length_chars, num_tokens, tokenizer)
    for name, value in (("num_queries", num_queries), ("values_per_key", values_per_key)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1")
    if num_distractors < 0:
        raise ValueError("the number of distractor needles cannot be negative")
    source = _as_text(haystack)
    rng = random.Random(seed)
    n_evidence = num_queries * values_per_key
    evidence_depths = _depths(rng, depths, n_evidence)
    distractor_depths = [rng.random() for _ in range(num_distractors)]
    for _ in range(_MAX_TRIES):
        keys = _keys(rng, num_queries + num_distractors)
        asked, distractors = keys[:num_queries], keys[num_queries:]
        values = [str(v) for v in rng.sample(range(1_000_000, 10_000_000), n_evidence + num_distractors)]
        evidence = [(key, values[i * values_per_key + j]) for i, key in enumerate(asked) for j in range(values_per_key)]
        others = list(zip(distractors, values[n_evidence:]))
        needles = [
            (NEEDLE_TEMPLATE.format(key=k, value=v), d)
            for (k, v), d in zip(evidence + others, evidence_depths + distractor_depths)
        ]
        context, spans = _build(rng, source, needles, length_chars, num_tokens, tokenizer)
        if all(context.count(v) == 1 for v in values) and all(context.count(k) == values_per_key for k in asked):
            break
    answers = tuple(v for _, v in evidence)
    if task == "niah_multiquery":
        question = f"What are all the special magic numbers for {_join_keys(asked)} mentioned in the provided text?"
    elif values_per_key > 1:
        question = f"What are all the special magic numbers for {asked[0]} mentioned in the provided text?"
    else:
        question = f"What is the special magic number for {asked[0]} mentioned in the provided text?"
    return LongContextExample(
        context=context,
        question=question,
        answer=", ".join(answers),
        answers=answers,
        task=task,
        depth=evidence_depths[0] if n_evidence == 1 else None,
        evidence_spans=tuple(spans[:n_evidence]),
        metadata={
            "seed": seed,
            "match": "any" if n_evidence == 1 else "all",
            "keys": asked,
            "distractor_keys": distractors,
            "distractor_values": [v for _, v in others],
            "distractor_spans": [list(s) for s in spans[n_evidence:]],
            "depths": evidence_depths,
            "evidence_depths": _actual_depths(context, spans[:n_evidence]),
            **_length_metadata(length_chars, num_tokens),
        },
    )


def niah_single(
    seed: int,
    haystack: str | os.PathLike[str],
    *,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    depth: float | None = None,
) -> LongContextExample:
    """One needle "One of the special magic numbers for {key} is: {value}." in real text; asks its value."""
    return _niah(
        seed, "niah_single", haystack, num_queries=1, values_per_key=1, num_distractors=0, depths=depth,
        length_chars=length_chars, num_tokens=num_tokens, tokenizer=tokenizer,
    )  # fmt: skip


def niah_multikey(
    seed: int,
    haystack: str | os.PathLike[str],
    *,
    num_keys: int = 4,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    depth: float | None = None,
) -> LongContextExample:
    """``num_keys`` needles with different keys; one is asked, the others are distractors at random depths.

    ``depth`` places the asked needle. Tests that the model retrieves by key, not "the one number".
    """
    if num_keys < 1:
        raise ValueError("num_keys must be at least 1")
    return _niah(
        seed, "niah_multikey", haystack, num_queries=1, values_per_key=1, num_distractors=num_keys - 1, depths=depth,
        length_chars=length_chars, num_tokens=num_tokens, tokenizer=tokenizer,
    )  # fmt: skip


def niah_multivalue(
    seed: int,
    haystack: str | os.PathLike[str],
    *,
    num_values: int = 4,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    depths: float | Sequence[float] | None = None,
) -> LongContextExample:
    """One key with ``num_values`` needles (values); all must be given. ``answers`` holds every value.

    ``depths``: one per value (or one float for all); random when ``None``.
    """
    return _niah(
        seed, "niah_multivalue", haystack, num_queries=1, values_per_key=num_values, num_distractors=0, depths=depths,
        length_chars=length_chars, num_tokens=num_tokens, tokenizer=tokenizer,
    )  # fmt: skip


def niah_multiquery(
    seed: int,
    haystack: str | os.PathLike[str],
    *,
    num_queries: int = 4,
    num_distractors: int = 0,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    depths: float | Sequence[float] | None = None,
) -> LongContextExample:
    """``num_queries`` keys, each with one value, all asked in one question; ``answers`` follow the keys' order."""
    return _niah(
        seed, "niah_multiquery", haystack, num_queries=num_queries, values_per_key=1, num_distractors=num_distractors,
        depths=depths, length_chars=length_chars, num_tokens=num_tokens, tokenizer=tokenizer,
    )  # fmt: skip
