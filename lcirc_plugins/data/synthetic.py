"""Synthetic long-context tasks with known answers: passkey, RULER-style needles, and book QA.

Why this module exists: QD-LCIRC's second training stage and its evaluation need (context, question,
answer) examples whose answer is *provably* somewhere in a long context, at a depth we control, so that
retrieval through the compressed memory can be trained and measured (accuracy versus depth and length).
Every generator here is a pure function of its ``seed`` (its own ``random.Random(seed)``, no global
state, no set iteration), so an evaluation set can be regenerated bit for bit instead of being shipped,
and every example records where its evidence was put (``evidence_spans``) so tests and analyses can
check that the answer really is in the context.

Haystacks are real text: a folder or file of essays or books read with :func:`load_haystack`. The Paul
Graham essays in ``../shared/data/haystack/`` are copyrighted: read them at run time, never copy them into
the package. The public-domain Gutenberg books (``../shared/data/books/``) and the standard passkey
filler can be redistributed.

Tasks (names accepted by :func:`make_dataset`):

- ``passkey``: the classic pass-key retrieval (filler text, or a real haystack).
- ``niah_single``, ``niah_multikey``, ``niah_multivalue``, ``niah_multiquery``: RULER's needle-in-a-haystack
  variants with "One of the special magic numbers for {key} is: {value}." needles.
- ``book_facts``: invented facts inserted into a real book at known depths (no other model needed).
- ``book_cloze``: fill-in-the-blank questions on named entities of the book itself.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lcirc_plugins.errors import EmptyInputError

__all__ = [
    "FILLER",
    "NEEDLE_TEMPLATE",
    "TASKS",
    "LongContextExample",
    "book_cloze",
    "book_facts",
    "count_tokens",
    "derive_seed",
    "load_haystack",
    "make_dataset",
    "niah_multikey",
    "niah_multiquery",
    "niah_multivalue",
    "niah_single",
    "passkey",
    "read_jsonl",
    "strip_gutenberg",
    "take_piece",
    "write_jsonl",
]

# The filler of the original passkey test (Mohtashami & Jaggi, "Landmark Attention", 2023).
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

HAYSTACK_EXTENSIONS = (".txt", ".md")
# Files in a data folder that describe the data and are not part of it.
_NOT_HAYSTACK = re.compile(r"^(sources|readme|license|licence|copying)(\.|$)", re.IGNORECASE)

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends with . ! or ?, possibly followed by closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]]*\s+(?=\S)")
_CLOSING_PUNCTUATION = re.compile(r"[.!?][\"'\u2019\u201d)\]]*(?=\s)")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "no", "mt", "capt", "col", "gen", "lt"})
# How far past a random offset a paragraph break is looked for before settling for a sentence start
# (the essay haystack lost most of its paragraph breaks when it was scraped).
_MAX_PARAGRAPH_SEEK = 2000
_MAX_TRIES = 20
_TOKEN_TOLERANCE = 0.005  # the length loop stops when within 0.5% of the requested token count

_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG EBOOK[^\n]*\n", re.IGNORECASE | re.MULTILINE)
_GUTENBERG_END = re.compile(
    r"^(?:\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG EBOOK|End of (?:the )?Project Gutenberg)", re.IGNORECASE | re.MULTILINE
)


class Tokenizer(Protocol):
    """What the length targeting needs from a tokenizer: a Hugging Face tokenizer's ``__call__``."""

    def __call__(self, text: str, **kwargs: Any) -> Mapping[str, Any]: ...


# ---------------------------------------------------------------------------------------------------------
# The example type and JSONL files
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LongContextExample:
    """One (context, question, answer) example with a record of where its evidence is.

    ``answers`` holds every acceptable answer; ``metadata["match"]`` says how to score: ``"any"`` (one
    of ``answers`` is enough, e.g. "hollow of the old oak" / "the hollow of the old oak") or ``"all"``
    (multi-value and multi-query needles: every value in ``answers`` must be given; ``answer`` joins them).
    ``depth`` is where the evidence sits as a fraction of the context (0 = start, 1 = end): the depth it
    was inserted at for inserted evidence (the actual place is snapped to the nearest sentence start), or
    ``None`` when the evidence is in several places (see ``metadata["depths"]``). ``evidence_spans`` are
    ``(start, end)`` character offsets into ``context`` of the evidence sentences.
    ``metadata`` holds JSON values only (lists, not tuples), so an example survives a JSONL round trip.
    """

    context: str
    question: str
    answer: str
    answers: tuple[str, ...]
    task: str
    depth: float | None = None
    evidence_spans: tuple[tuple[int, int], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # JSON gives lists back; store tuples so that equality and immutability hold after a round trip.
        object.__setattr__(self, "answers", tuple(self.answers))
        object.__setattr__(self, "evidence_spans", tuple((int(s), int(e)) for s, e in self.evidence_spans))
        for start, end in self.evidence_spans:
            if not 0 <= start <= end <= len(self.context):
                raise ValueError(f"evidence span ({start}, {end}) is outside the context of {len(self.context)} characters")

    def to_json(self) -> str:
        """One JSON line (no newline), UTF-8 text kept as is."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> LongContextExample:
        """Inverse of :meth:`to_json`; also accepts an already parsed dict."""
        record = json.loads(data) if isinstance(data, (str, bytes)) else dict(data)
        return cls(**record)


def write_jsonl(examples: Iterable[LongContextExample], path: str | os.PathLike[str]) -> int:
    """Write examples one per line (streaming, so a generator of any size works); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(example.to_json() + "\n")
            count += 1
    return count


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[LongContextExample]:
    """Yield the examples of a JSONL file lazily (blank lines are skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield LongContextExample.from_json(line)
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{path}:{line_no}: not a LongContextExample line ({exc})") from exc


# ---------------------------------------------------------------------------------------------------------
# Haystacks
# ---------------------------------------------------------------------------------------------------------


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and licence footer if present, so haystacks are the book's prose.

    The licence is ~3,000 words of legal text per book: as a haystack it would be the same text in every
    book, and cloze questions on it ("Project ____ Literary Archive Foundation") would be meaningless.
    """
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def load_haystack(path_or_dir: str | os.PathLike[str], *, gutenberg: bool = True) -> str:
    """Read a .txt/.md file, or every .txt/.md file of a folder (sorted by name, joined by a blank line).

    Files are decoded as UTF-8 with an optional byte-order mark, and CRLF/CR line endings become LF, so
    character offsets mean the same on every platform. ``SOURCES.md``/``README``/licence files of a data
    folder are skipped. With ``gutenberg=True`` Project Gutenberg headers and footers are removed.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in HAYSTACK_EXTENSIONS and not _NOT_HAYSTACK.match(p.name)
        )
        if not files:
            raise EmptyInputError(f"{path}: no {'/'.join(HAYSTACK_EXTENSIONS)} haystack files in this folder")
    elif path.exists():
        files = [path]
    else:
        raise FileNotFoundError(f"haystack not found: {path}")
    texts = []
    for file in files:
        text = file.read_text(encoding="utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        text = strip_gutenberg(text) if gutenberg else text.strip()
        if text:
            texts.append(text)
    if not texts:
        raise EmptyInputError(f"{path}: the haystack text is empty")
    return "\n\n".join(texts)


def count_tokens(text: str, tokenizer: Tokenizer) -> int:
    """Number of tokens of ``text`` without special tokens (what a context adds to a prompt)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def take_piece(
    text: str,
    seed: int | random.Random,
    *,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> str:
    """A piece of ``text`` of about ``length_chars`` characters, or ``num_tokens`` tokens with ``tokenizer``.

    It starts at a seeded random offset moved to the next paragraph start (or sentence start when no
    paragraph break is near, as in scraped essays) and ends at a word boundary. If ``text`` is too short,
    it continues from the start of ``text`` again (paragraph-separated), so any length can be made.
    """
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    _check_length(length_chars, num_tokens, tokenizer)
    start = _random_start(text, rng)
    return _cut(text, start, length_chars, num_tokens, tokenizer)


def _check_length(length_chars: int | None, num_tokens: int | None, tokenizer: Tokenizer | None) -> None:
    if (length_chars is None) == (num_tokens is None):
        raise ValueError("give exactly one of length_chars and num_tokens (with a tokenizer)")
    if num_tokens is not None and tokenizer is None:
        raise ValueError("num_tokens needs a tokenizer to count tokens with")
    if (length_chars if length_chars is not None else num_tokens) <= 0:  # type: ignore[operator]
        raise ValueError("the requested length must be positive")


def _as_text(haystack: str | os.PathLike[str], name: str = "haystack") -> str:
    """Accept haystack text or a Path; refuse a str that is obviously a path rather than text."""
    if isinstance(haystack, os.PathLike):
        return load_haystack(haystack)
    if not isinstance(haystack, str) or not haystack.strip():
        raise EmptyInputError(f"{name} is empty: pass the text (load_haystack(path)) or a pathlib.Path")
    if not any(c.isspace() for c in haystack.strip()):
        raise ValueError(f"{name} {haystack[:80]!r} looks like a path, not text: pass load_haystack(path) or Path(...)")
    return haystack


def _random_start(text: str, rng: random.Random) -> int:
    pos = rng.randrange(len(text))
    para = _PARAGRAPH_BREAK.search(text, pos, min(len(text), pos + _MAX_PARAGRAPH_SEEK))
    if para and para.end() < len(text):
        return para.end()
    sentence = _SENTENCE_END.search(text, pos)
    return sentence.end() if sentence else 0


def _cyclic(text: str, start: int, min_chars: int, joiner: str) -> str:
    """The first ``min_chars`` characters of ``text[start:]`` continued with ``text`` again as needed."""
    parts, size = [text[start : start + min_chars]], min(len(text) - start, min_chars)
    while size < min_chars:
        parts.append(joiner + text[: min_chars - size])
        size += len(parts[-1])
    return "".join(parts)[:min_chars]


def _cut(text: str, start: int, length_chars: int | None, num_tokens: int | None, tokenizer: Tokenizer | None) -> str:
    joiner = "\n\n" if "\n" in text else " "  # filler runs on as one paragraph; real text keeps paragraphs
    if num_tokens is None:
        assert length_chars is not None
        buf = _cyclic(text, start, length_chars + 1, joiner)
        return _clean_end(buf, length_chars)
    assert tokenizer is not None
    estimate = num_tokens * 5 + 64
    while True:
        buf = _cyclic(text, start, estimate, joiner)
        try:
            enc = tokenizer(buf, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, TypeError, ValueError, KeyError):  # slow tokenizers have no offsets
            enc, offsets = tokenizer(buf, add_special_tokens=False), None
        ids = enc["input_ids"]
        if len(ids) > num_tokens:
            break
        estimate = int(len(buf) * 1.3 * num_tokens / max(len(ids), 1)) + 64
    end = offsets[num_tokens][0] if offsets is not None else len(tokenizer.decode(ids[:num_tokens]))  # type: ignore[attr-defined]
    return _clean_end(buf, end)


def _clean_end(buf: str, end: int) -> str:
    """``buf[:end]``, its end moved back to a sentence end if one is near (within 1% of the length, at most
    200 characters), else to a word end: contexts end cleanly, a little under the length asked for."""
    if end >= len(buf):
        return buf.rstrip()
    window = min(200, end // 100)
    ends = [m.end() for m in _CLOSING_PUNCTUATION.finditer(buf, max(0, end - window), end + 1)]
    if ends:
        return buf[: ends[-1]]
    cut = end if buf[end].isspace() else max(buf.rfind(" ", 0, end), buf.rfind("\n", 0, end))
    return buf[: cut if cut > end - 40 else end].rstrip()


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


# ---------------------------------------------------------------------------------------------------------
# Passkey
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# RULER-style needles in a haystack
# ---------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------
# Book QA without another model: inserted facts and cloze questions
# ---------------------------------------------------------------------------------------------------------

OWNERS = (
    "lighthouse keeper", "village baker", "ship's cook", "old miller", "harbour master", "retired schoolmaster",
    "night watchman", "ferryman", "clockmaker", "innkeeper's daughter", "chapel organist", "toll-gate keeper",
    "coal merchant", "rope maker", "bell ringer", "orchard keeper", "glassblower", "map seller", "stable boy",
    "lock keeper", "apothecary", "candle maker", "shepherdess", "bookbinder",
)  # fmt: skip
ANIMALS = ("cat", "dog", "parrot", "goat", "pony", "tortoise", "owl", "ferret", "donkey", "canary")
PET_NAMES = (
    "Bartholomew", "Marigold", "Ptolemy", "Clementine", "Horatio", "Persephone", "Barnaby", "Octavia",
    "Montgomery", "Winifred", "Archibald", "Seraphina", "Cornelius", "Philippa", "Thaddeus", "Wilhelmina",
    "Ignatius", "Rosalind", "Leopold", "Euphemia", "Balthazar", "Hermione", "Percival", "Ottoline",
)  # fmt: skip
TOWNS = (
    "Quillmoor", "Ashcombe Vale", "Thornbury Wick", "Fennick Cross", "Marrowgate", "Dunhollow", "Brackenmere",
    "Wyndle Ford", "Saltmarsh Hythe", "Kelderby", "Ormsby Reach", "Pellingham", "Gorsewick", "Larkspur Hollow",
)  # fmt: skip
HIDDEN_THINGS = ("silver key", "map of the coast", "family ring", "brass compass", "deed to the cottage", "bag of gold coins")
HIDING_PLACES = (
    "hollow of the old oak", "false bottom of the flour barrel", "back of the grandfather clock",
    "loose brick behind the stove", "lining of a green umbrella", "tin box under the floorboards",
    "belly of a porcelain pig", "spine of a hymn book", "toe of a riding boot", "nest of an empty dovecote",
)  # fmt: skip
COLLECTIONS = ("clocks", "teapots", "walking sticks", "lanterns", "pairs of boots", "oil paintings", "beehives", "umbrellas")


def _fact(rng: random.Random, owner: str, kind: int) -> tuple[str, str, tuple[str, ...]]:
    """(statement, question, acceptable answers) of one invented fact about ``owner``."""
    if kind == 0:
        animal, name = rng.choice(ANIMALS), rng.choice(PET_NAMES)
        return f"The {owner}'s {animal} was named {name}.", f"What was the name of the {owner}'s {animal}?", (name,)
    if kind == 1:
        town = rng.choice(TOWNS)
        return f"The {owner} was born in the town of {town}.", f"In which town was the {owner} born?", (town,)
    if kind == 2:
        thing, place = rng.choice(HIDDEN_THINGS), rng.choice(HIDING_PLACES)
        return (
            f"The {owner} kept the {thing} hidden in the {place}.",
            f"Where did the {owner} keep the {thing} hidden?",
            (place, f"the {place}", f"in the {place}"),
        )
    number, things = rng.randint(13, 97), rng.choice(COLLECTIONS)
    return f"The {owner} owned exactly {number} {things}.", f"How many {things} did the {owner} own?", (str(number),)


_FACT_KINDS = 4


def book_facts(
    seed: int,
    book: str | os.PathLike[str],
    *,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    depth: float | None = None,
    num_facts: int = 1,
) -> LongContextExample:
    """An invented fact ("The lighthouse keeper's cat was named Bartholomew.") inserted into a real book.

    The question can only be answered from the inserted sentence, so the example is correct without any
    model writing or checking it. With ``num_facts > 1`` the other facts are of the same kind about other
    people (distractors). ``depth`` places the asked fact.
    """
    _check_length(length_chars, num_tokens, tokenizer)
    if num_facts < 1:
        raise ValueError("num_facts must be at least 1")
    source = _as_text(book, "book")
    rng = random.Random(seed)
    d = rng.random() if depth is None else _check_depth(depth)
    other_depths = [rng.random() for _ in range(num_facts - 1)]
    kind = rng.randrange(_FACT_KINDS)
    for _ in range(_MAX_TRIES):
        owners = rng.sample(OWNERS, num_facts)
        facts = [_fact(rng, owner, kind) for owner in owners]
        statements = [f[0] for f in facts]
        context, spans = _build(rng, source, list(zip(statements, [d, *other_depths])), length_chars, num_tokens, tokenizer)
        answer = re.compile(rf"(?<!\w){re.escape(facts[0][2][0])}(?!\w)")
        if len(answer.findall(context)) == sum(len(answer.findall(s)) for s in statements):  # not in the book itself
            break
    statement, question, answers = facts[0]
    return LongContextExample(
        context=context,
        question=question,
        answer=answers[0],
        answers=answers,
        task="book_facts",
        depth=d,
        evidence_spans=(spans[0],),
        metadata={
            "seed": seed,
            "match": "any",
            "fact": statement,
            "distractor_facts": statements[1:],
            "distractor_spans": [list(s) for s in spans[1:]],
            "depths": [d],
            "evidence_depths": _actual_depths(context, spans[:1]),
            **_length_metadata(length_chars, num_tokens),
        },
    )


# Capitalised words that are not named entities (or too common to ask about).
_CLOZE_STOP = frozenset({
    "Mr", "Mrs", "Miss", "Ms", "Dr", "St", "Sir", "Madam", "Lady", "Lord", "God", "Oh", "Ah", "Yes", "No", "Well",
    "Chapter", "Part", "Book", "The", "An", "And", "But", "Then", "So", "He", "She", "It", "They", "We", "You", "His",
    "Her", "Its", "Their", "Our", "My", "Your", "This", "That", "There", "Here",
})  # fmt: skip
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
_OPENING_QUOTES = "\"'\u201c\u2018(["


@functools.lru_cache(maxsize=4)
def _capitalised_counts(text: str) -> Counter[str]:
    """Occurrences of each capitalised word of a book (cached: a dataset asks this of one book many times)."""
    return Counter(_CAPITALISED.findall(text))


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of every sentence of ``text``, trailing whitespace excluded."""
    starts = _sentence_starts(text)
    spans = []
    for s, e in itertools.pairwise(starts):
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            spans.append((s, e))
    return spans


def _cloze_candidates(
    context: str, counts: Counter[str], min_occurrences: int, min_chars: int, max_chars: int
) -> list[tuple[int, int, int, str]]:
    """(sentence start, sentence end, entity offset, entity) of every usable blank in ``context``."""
    candidates = []
    for s, e in _sentences(context):
        if not min_chars <= e - s <= max_chars or "____" in context[s:e]:
            continue
        sentence = context[s:e]
        first_word = re.search(r"[A-Za-z]", sentence)
        for m in _CAPITALISED.finditer(sentence):
            word = m.group()
            before = sentence[: m.start()].rstrip(" ")
            if (
                (first_word and m.start() == first_word.start())
                or word in _CLOZE_STOP
                or counts[word] < min_occurrences
                or (before and before[-1] in _OPENING_QUOTES)
                or before.endswith(("--", "\u2014"))
                or sentence.count(word) != 1  # the question must not give the answer away
            ):
                continue
            candidates.append((s, e, s + m.start(), word))
    return candidates


def book_cloze(
    seed: int,
    book: str | os.PathLike[str],
    *,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
    depth: float | None = None,
    min_occurrences: int = 2,
    min_sentence_chars: int = 40,
    max_sentence_chars: int = 300,
) -> LongContextExample:
    """A fill-in-the-blank question on a named entity of the book itself; the context is the book.

    A sentence of the context is chosen that contains a capitalised word (not at the start of the sentence
    or of a quotation, not a pronoun/title) occurring at least ``min_occurrences`` times in the book,
    a cheap stand-in for a named-entity tagger. The word is blanked out in the question and is the answer;
    ``evidence_spans`` points to the original sentence, which stays in the context. With no length, the
    whole book is the context; otherwise a window of it. ``depth`` picks the candidate sentence nearest
    to that depth (random when ``None``).
    """
    text = _as_text(book, "book")
    rng = random.Random(seed)
    whole_book = length_chars is None and num_tokens is None
    if not whole_book:
        _check_length(length_chars, num_tokens, tokenizer)
    counts = _capitalised_counts(text)  # "appears at least twice in the book", not only in the window
    for _ in range(1 if whole_book else _MAX_TRIES):  # a short window may hold no usable entity: try another
        context = text if whole_book else _cut(text, _random_start(text, rng), length_chars, num_tokens, tokenizer)
        candidates = _cloze_candidates(context, counts, min_occurrences, min_sentence_chars, max_sentence_chars)
        if candidates:
            break
    else:
        raise ValueError("no sentence with a repeated named entity in the book windows tried; use a longer window")
    if depth is None:
        s, e, at, entity = rng.choice(candidates)
    else:
        target = _check_depth(depth) * len(context)
        s, e, at, entity = min(candidates, key=lambda c: (abs(c[0] - target), c[2]))
    blanked = context[s:at] + "____" + context[at + len(entity) : e]
    question = "Fill in the blank from the book: '" + " ".join(blanked.split()) + "'"
    return LongContextExample(
        context=context,
        question=question,
        answer=entity,
        answers=(entity,),
        task="book_cloze",
        depth=s / len(context),
        evidence_spans=((s, e),),
        metadata={
            "seed": seed,
            "match": "any",
            "entity_offset": at,
            "entity_occurrences": counts[entity],  # in the whole book
            "entity_occurrences_in_context": len(re.findall(rf"\b{entity}\b", context)),
            "requested_depth": depth,
            **({} if whole_book else _length_metadata(length_chars, num_tokens)),
        },
    )


# ---------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------

TASKS: dict[str, Callable[..., LongContextExample]] = {
    "passkey": passkey,
    "niah_single": niah_single,
    "niah_multikey": niah_multikey,
    "niah_multivalue": niah_multivalue,
    "niah_multiquery": niah_multiquery,
    "book_facts": book_facts,
    "book_cloze": book_cloze,
}


def derive_seed(seed: int, index: int | str) -> int:
    """The seed of item ``index`` (an example number, a document id) of something seeded ``seed``.

    Stable across runs, Python versions and platforms (SHA-256, not ``hash()``), and unrelated for
    neighbouring indices, so example ``i`` does not depend on how many examples were asked for.
    """
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:8], "big")


def make_dataset(task: str, n: int, seed: int, **kwargs: Any) -> Iterator[LongContextExample]:
    """Yield ``n`` examples of ``task`` with seeds ``derive_seed(seed, i)``; ``kwargs`` go to the generator.

    A ``haystack``/``book`` given as a ``pathlib.Path`` is read once here, not once per example.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if n < 0:
        raise ValueError("n cannot be negative")
    for key in ("haystack", "book"):
        if isinstance(kwargs.get(key), os.PathLike):
            kwargs[key] = load_haystack(kwargs[key])
    generator = TASKS[task]
    for i in range(n):
        yield generator(derive_seed(seed, i), **kwargs)
