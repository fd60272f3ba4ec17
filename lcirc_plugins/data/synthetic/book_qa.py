"""Book QA without another model: invented facts inserted into a real book at known depths, and cloze questions on the
book's own named entities."""

from __future__ import annotations

import functools
import itertools
import os
import random
import re
from collections import Counter

from .examples import LongContextExample, Tokenizer
from .haystacks import _MAX_TRIES, _as_text, _check_length, _cut, _random_start
from .insertion import _actual_depths, _build, _check_depth, _length_metadata, _sentence_starts

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


def _mid_sentence(text: str, at: int) -> bool:
    """Whether a word at ``at`` follows another word of its sentence (a capital there marks a name)."""
    before = text[max(0, at - 3) : at].rstrip()
    return bool(before) and before[-1] not in ".!?:;\"'()[]-\u2014\u201c\u2018\n"


OPEN_QUESTIONS = ("Who is {name}?", "What does {name} do?", "What do we learn about {name}?", "What happens to {name}?")
GENERAL_QUESTION = "What happens in this part of the story?"


def open_question(
    seed: int,
    book: str | os.PathLike[str],
    *,
    length_chars: int | None = None,
    num_tokens: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> LongContextExample:
    """An open question ("Who is Jim?") about a name that recurs in a window of the book; no reference answer.

    For training only (not in ``TASKS``): the answer is whatever the backbone says with the window in its own
    context (``answer`` is empty, ``metadata["match"]`` is ``"teacher"``). Its use is the question a user asks
    about the story, whose answer is spread over the text rather than in one salient sentence. The name is one
    of the window's five most frequent names that occur twice; in a window without one, any name, else
    ``GENERAL_QUESTION``.
    """
    _check_length(length_chars, num_tokens, tokenizer)
    text = _as_text(book, "book")
    rng = random.Random(seed)
    for _ in range(_MAX_TRIES):
        context = _cut(text, _random_start(text, rng), length_chars, num_tokens, tokenizer)
        counts = Counter(m.group() for m in _CAPITALISED.finditer(context) if m.group() not in _CLOZE_STOP and _mid_sentence(context, m.start()))
        names = [name for name, count in counts.most_common(5) if count >= 2]
        if names:
            break
    name = rng.choice(names or list(counts) or [""])  # a short window may name no one twice, or no one at all
    first = re.search(rf"\b{name}\b", context) if name else None
    return LongContextExample(
        context=context,
        question=rng.choice(OPEN_QUESTIONS).format(name=name) if name else GENERAL_QUESTION,
        answer="",
        answers=(),
        task="open_question",
        evidence_spans=((first.start(), first.end()),) if first else (),
        metadata={"seed": seed, "match": "teacher", "name": name, "occurrences": counts[name], **_length_metadata(length_chars, num_tokens)},
    )
