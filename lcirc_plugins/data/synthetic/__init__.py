"""Synthetic long-context tasks with known answers: passkey, RULER-style needles, and book QA.

Why this module exists: QD-LCIRC's second training stage and its evaluation need (context, question,
answer) examples whose answer is *provably* somewhere in a long context, at a depth we control, so that
retrieval through the compressed memory can be trained and measured (accuracy versus depth and length).
Every generator here is a pure function of its ``seed`` (its own ``random.Random(seed)``, no global
state, no set iteration), so an evaluation set can be regenerated bit for bit instead of being shipped,
and every example records where its evidence was put (``evidence_spans``) so tests and analyses can
check that the answer really is in the context.

Haystacks are real text: a folder or file of essays or books read with :func:`load_haystack`. The Paul
Graham essays in ``$LCIRC_SHARED_DATA/haystack/`` are copyrighted: read them at run time, never copy them into
the package. The public-domain Gutenberg books (``$LCIRC_SHARED_DATA/books/``) and the standard passkey
filler can be redistributed.

Tasks (names accepted by :func:`make_dataset`):

- ``passkey``: the classic pass-key retrieval (filler text, or a real haystack).
- ``niah_single``, ``niah_multikey``, ``niah_multivalue``, ``niah_multiquery``: RULER's needle-in-a-haystack
  variants with "One of the special magic numbers for {key} is: {value}." needles.
- ``book_facts``: invented facts inserted into a real book at known depths (no other model needed).
- ``book_cloze``: fill-in-the-blank questions on named entities of the book itself.
- ``open_question`` (training only, not in ``TASKS``): "Who is Jim?" about a recurring name, answered by the
  backbone reading the window itself.

Modules: ``examples`` (the example type, JSONL), ``haystacks`` (reading and cutting real text),
``insertion`` (evidence at a depth), ``needles`` (pass key, RULER needles), ``book_qa`` (facts, cloze),
``decoys`` (an unasked pass key beside the evidence) and ``registry`` (``TASKS`` by name, ``NEEDLE_TASKS`` for depth sweeps, seeded datasets).
"""


from __future__ import annotations

from .book_qa import book_cloze, book_facts, open_question
from .decoys import decoy_sentence, with_decoy_passkey
from .examples import LongContextExample, Tokenizer, read_jsonl, write_jsonl
from .haystacks import FILLER, count_tokens, load_haystack, strip_gutenberg, take_piece
from .needles import NEEDLE_TEMPLATE, niah_multikey, niah_multiquery, niah_multivalue, niah_single, passkey
from .registry import NEEDLE_TASKS, TASKS, derive_seed, make_dataset

__all__ = [
    "FILLER",
    "NEEDLE_TASKS",
    "NEEDLE_TEMPLATE",
    "TASKS",
    "LongContextExample",
    "Tokenizer",
    "book_cloze",
    "book_facts",
    "count_tokens",
    "decoy_sentence",
    "derive_seed",
    "load_haystack",
    "make_dataset",
    "niah_multikey",
    "niah_multiquery",
    "niah_multivalue",
    "niah_single",
    "open_question",
    "passkey",
    "read_jsonl",
    "strip_gutenberg",
    "take_piece",
    "with_decoy_passkey",
    "write_jsonl",
]

