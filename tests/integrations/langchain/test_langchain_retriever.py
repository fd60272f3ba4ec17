"""LCIRCMemoryRetriever: passages with provenance, BM25 across documents, persistence without pickle, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from langchain_core.documents import Document
from safetensors import safe_open

from lcirc_plugins.errors import CorruptFileError, EmptyInputError, MemoryMismatchError
from lcirc_plugins.langchain import PROVENANCE_KEYS, LCIRCMemoryRetriever
from lcirc_plugins.model.passages import rank_passages

FACT = " The password of the Admiral Benbow cellar is PARROT-8812. "


@pytest.fixture(scope="module")
def library(lc_model, sample_text) -> tuple[LCIRCMemoryRetriever, list[Document]]:
    cut = sample_text.index("\n\n", 3000)
    docs = [
        Document(
            page_content=sample_text[:cut] + FACT + sample_text[cut:6000],
            metadata={"source": "chapter-1.txt", "chapter": 1},
            id="ch1",
        ),
        Document(page_content=sample_text[12_000:16_000], metadata={"source": "chapter-3.txt", "chapter": 3}),
    ]
    return LCIRCMemoryRetriever.from_documents(docs, model=lc_model, k=3), docs


def test_results_are_passages_with_spans_scores_and_the_source_metadata(library):
    retriever, docs = library
    results = retriever.invoke("What is the password of the Admiral Benbow cellar?")
    assert len(results) == 3
    assert "PARROT-8812" in results[0].page_content and results[0].metadata["memory_id"] == "ch1"
    scores = [d.metadata["score"] for d in results]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    texts = {"ch1": docs[0].page_content, "doc-1": docs[1].page_content}
    for doc in results:
        assert set(PROVENANCE_KEYS) <= set(doc.metadata)
        source = texts[doc.metadata["memory_id"]]
        assert source[doc.metadata["start"] : doc.metadata["end"]] == doc.page_content
        assert (
            doc.metadata["source"] in ("chapter-1.txt", "chapter-3.txt")
            and doc.id == f"{doc.metadata['memory_id']}#{doc.metadata['segment']}"
        )


def test_one_document_ranks_exactly_like_rank_passages(lc_model, book_memory):
    query = "Who called roughly for a glass of rum?"
    retriever = LCIRCMemoryRetriever(model=lc_model, memories=[book_memory], k=5)
    expected = rank_passages(book_memory, lc_model.tokenizer, query, top_k=5)
    got = retriever.invoke(query)
    assert [(d.metadata["segment"], d.page_content, d.metadata["score"]) for d in got] == [
        (p.segment, p.text, p.score) for p in expected
    ]
    assert got[0].metadata["source"] == "sample-book.txt"


def test_k_per_call_and_async(library):
    retriever, _ = library
    query = "rum and the captain"
    assert len(retriever.invoke(query, k=1)) == 1
    assert retriever.invoke(query, k=1)[0] == retriever.invoke(query)[0]
    assert asyncio.run(retriever.ainvoke(query)) == retriever.invoke(query)
    assert retriever.batch([query, "the password"]) == [retriever.invoke(query), retriever.invoke("the password")]


def test_save_and_load_round_trip_with_safetensors_and_json_only(library, lc_model, tmp_path):
    retriever, _ = library
    retriever.save(tmp_path / "index")
    files = sorted(p.relative_to(tmp_path / "index").as_posix() for p in (tmp_path / "index").rglob("*") if p.is_file())
    assert files == ["lcirc_retriever.json", "memories/00000.safetensors", "memories/00001.safetensors"]
    index = json.loads((tmp_path / "index" / "lcirc_retriever.json").read_text())
    assert [m["id"] for m in index["memories"]] == ["ch1", "doc-1"] and index["k"] == 3
    with safe_open(str(tmp_path / "index" / "memories" / "00000.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["metadata"]) == {"source": "chapter-1.txt", "chapter": 1}
    loaded = LCIRCMemoryRetriever.load(tmp_path / "index", model=lc_model)
    query = "What is the password of the Admiral Benbow cellar?"
    assert loaded.invoke(query) == retriever.invoke(query)
    assert len(LCIRCMemoryRetriever.load(tmp_path / "index", model=lc_model, k=1).invoke(query)) == 1


def test_add_documents_extends_the_retriever(lc_model, book_memory):
    retriever = LCIRCMemoryRetriever(model=lc_model, memories=[book_memory], memory_ids=["book"])
    assert retriever.add_documents([Document(page_content="Captain Flint hid the treasure under the tall tree.", id="note")]) == [
        "note"
    ]
    assert retriever.invoke("Where did Captain Flint hide the treasure?")[0].metadata["memory_id"] == "note"


def test_a_memory_from_another_adapter_is_refused(lc_model, make_lcirc, foreign_memory, library, tmp_path):
    with pytest.raises(MemoryMismatchError, match="adapter"):
        LCIRCMemoryRetriever(model=lc_model, memories=[foreign_memory])
    library[0].save(tmp_path / "index")
    with pytest.raises(MemoryMismatchError, match="adapter"):
        LCIRCMemoryRetriever.load(tmp_path / "index", model=make_lcirc("llama", seed=2))


def test_bad_inputs_give_clear_errors(lc_model, book_memory, library, tmp_path):
    with pytest.raises(EmptyInputError, match="no documents"):
        LCIRCMemoryRetriever.from_documents([], model=lc_model)
    with pytest.raises(EmptyInputError, match="document 1 has no text"):
        LCIRCMemoryRetriever.from_documents(["Some text.", "  "], model=lc_model)
    with pytest.raises(EmptyInputError, match="query is empty"):
        library[0].invoke("  ")
    with pytest.raises(FileNotFoundError, match="lcirc_retriever.json"):
        LCIRCMemoryRetriever.load(tmp_path, model=lc_model)
    (tmp_path / "lcirc_retriever.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not a valid retriever index"):
        LCIRCMemoryRetriever.load(tmp_path, model=lc_model)
    odd = LCIRCMemoryRetriever(model=lc_model, memories=[dataclasses.replace(book_memory, metadata={"when": object()})])
    with pytest.raises(TypeError, match="cannot be saved as JSON"):
        odd.save(tmp_path / "odd")
