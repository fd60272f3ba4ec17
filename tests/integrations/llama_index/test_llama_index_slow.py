"""Slow set: the compressed-memory retriever with the shipped default adapter on a 32K-token book."""

from __future__ import annotations

import random

import pytest
from llama_index.core import Document
from support import SHARED_DATA

from lcirc_plugins import LCIRCModel
from lcirc_plugins.errors import AdapterNotFoundError
from lcirc_plugins.llama_index import LCIRCLLM, CompressedMemoryIndex

BOOK = SHARED_DATA / "books" / "dickens-a-tale-of-two-cities.txt"
BOOK_TOKENS = 32_768

FIRST = ["Orla", "Tibor", "Maelis", "Corwin", "Ysolde", "Bastian", "Ilka", "Perrin", "Saoirse", "Lazlo", "Wenna", "Dorian"]
LAST = ["Vexmoor", "Quillfeather", "Brannock", "Halloway", "Ostrander", "Pimbury", "Crannach", "Delacourt", "Fenwyck", "Marrable"]
THINGS = [
    "silver compass",
    "brass telescope",
    "jade seal",
    "iron key",
    "velvet ledger",
    "copper kettle",
    "ivory chess set",
    "glass lantern",
]
PLACES = [
    "cellar of the mill",
    "hollow oak by the river",
    "vestry of the chapel",
    "loft above the stables",
    "chest under the stairs",
]


def inserted_facts(tokenizer, n_facts: int = 10, seed: int = 0) -> tuple[str, list[tuple[str, str, int, int]]]:
    """The first 32,768 tokens of the book with ``n_facts`` seeded facts at paragraph breaks.

    Returns the text and, per fact, ``(question, answer, char_start, char_end)`` of the inserted sentence.
    """
    raw = BOOK.read_text(encoding="utf-8-sig")
    offsets = tokenizer(raw[:400_000], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    text = raw[: offsets[BOOK_TOKENS][0]]
    rng = random.Random(seed)
    breaks = [i for i in range(len(text)) if text.startswith("\n\n", i)]
    spots = sorted(rng.sample(breaks[5:], n_facts), reverse=True)  # insert from the end: earlier offsets stay valid
    people = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], n_facts)
    facts = []
    for spot, person in zip(spots, people):
        thing, place, code = rng.choice(THINGS), rng.choice(PLACES), f"{rng.randint(1000, 9999)}"
        sentence = f"\n\n{person} hid the {thing} in the {place}; the code is {code}."
        text = text[:spot] + sentence + text[spot:]
        facts.append((f"Where did {person} hide the {thing}?", code, sentence))
    located = []
    for question, code, sentence in facts:
        start = text.index(sentence) + 2
        located.append((question, code, start, start + len(sentence) - 2))
    return text, located


def inserted_fact_hit_rate(
    llm: LCIRCLLM, n_facts: int = 10, seed: int = 0, top_k: int = 3
) -> tuple[int, int, CompressedMemoryIndex]:
    """How many seeded facts have a top-``top_k`` retrieved passage overlapping their sentence."""
    text, facts = inserted_facts(llm.model.tokenizer, n_facts, seed)
    index = CompressedMemoryIndex.from_documents([Document(text=text, id_="book")], llm=llm)
    assert index.memory("book#memory").num_tokens >= BOOK_TOKENS
    retriever = index.as_retriever(similarity_top_k=top_k)
    found = 0
    for question, _code, start, end in facts:
        spans = [(n.node.metadata["start"], n.node.metadata["end"]) for n in retriever.retrieve(question)]
        found += any(s < end and e > start for s, e in spans)
    return found, len(facts), index


@pytest.fixture(scope="module")
def default_llm() -> LCIRCLLM:
    if not BOOK.is_file():
        pytest.fail(f"{BOOK} is missing: the slow LlamaIndex test reads a book from $LCIRC_SHARED_DATA/books/")
    try:
        model = LCIRCModel.from_pretrained("default")
    except AdapterNotFoundError as err:
        pytest.fail(f"this test needs the shipped default adapter, and none is installed: {err}")
    return LCIRCLLM(model=model, max_new_tokens=32)


@pytest.mark.slow
def test_default_adapter_retriever_finds_inserted_facts_in_a_32k_token_book(default_llm):
    found, total, index = inserted_fact_hit_rate(default_llm)
    assert total == 10
    assert found >= 8, f"the fact's passage was in the top 3 for only {found} of {total} questions"
    response = index.as_query_engine().query("Where did the hidden things end up?")
    assert response.source_nodes and response.metadata["memory_ids"] == ["book#memory"]
