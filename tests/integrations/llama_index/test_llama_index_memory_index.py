"""The compressed-memory index, retriever and query engine, with real LlamaIndex storage and readers."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import torch
from llama_index.core import Document, SimpleDirectoryReader, StorageContext, load_index_from_storage
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse

# MockLLM (llama-index-core's echo LLM) stands for "any other LLM": it returns the prompt it was given,
# which shows what such an LLM reads. The LCIRC side is never mocked.
from llama_index.core.llms import MockLLM

from lcirc_plugins.errors import ConfigError, CorruptFileError, EmptyInputError, MemoryMismatchError
from lcirc_plugins.llama_index import MEMORY_FOLDER, PROVENANCE_KEYS, CompressedMemoryIndex
from lcirc_plugins.model.passages import rank_passages

FACT = " The secret password of the Admiral Benbow inn is PARROT-8812. "
QUESTION = "What is the secret password of the Admiral Benbow inn?"


@pytest.fixture
def documents(sample_text: str) -> list[Document]:
    """Two documents; the second holds an inserted fact in its middle."""
    cut = sample_text.index("\n\n", 9_000)
    return [
        Document(text=sample_text[:4_000], id_="part-1", metadata={"title": "Treasure Island, part 1", "chapter": 1}),
        Document(
            text=sample_text[8_000:cut] + FACT + sample_text[cut:12_000],
            id_="part-2",
            metadata={"title": "Treasure Island, part 2"},
        ),
    ]


def hits(retrieved) -> list[tuple]:
    """Everything a retrieval result carries: identity, score, text and metadata."""
    return [(n.node.node_id, round(n.score, 9), n.node.text, dict(n.node.metadata)) for n in retrieved]


def test_documents_are_compressed_whole_keeping_id_and_metadata(make_llm, sample_text, tmp_path):
    (tmp_path / "one.txt").write_text(sample_text[:3_000], encoding="utf-8")
    (tmp_path / "two.txt").write_text(sample_text[3_000:5_000], encoding="utf-8")
    documents = SimpleDirectoryReader(str(tmp_path), filename_as_id=True).load_data()
    llm = make_llm()
    index = CompressedMemoryIndex.from_documents(documents, llm=llm)
    assert len(index.memory_ids) == 2, "one memory per document, nothing split"
    for document in documents:
        memory_id = f"{document.doc_id}#memory"
        memory = index.memory(memory_id)
        assert memory.num_tokens == len(llm.model.tokenizer(document.text, add_special_tokens=False)["input_ids"])
        assert memory.num_chars == len(document.text)
        assert memory.metadata["doc_id"] == document.doc_id and memory.metadata["file_name"] == document.metadata["file_name"]
        node = index.docstore.get_node(memory_id)
        assert node.ref_doc_id == document.doc_id and node.metadata == document.metadata
    assert set(index.ref_doc_info) == {d.doc_id for d in documents}


def test_retriever_returns_separate_passages_with_text_span_score_and_memory(make_llm, documents):
    index = CompressedMemoryIndex.from_documents(documents, llm=make_llm())
    retrieved = index.as_retriever(similarity_top_k=4).retrieve(QUESTION)
    assert len(retrieved) == 4 and len({n.node.node_id for n in retrieved}) == 4, "passages are never merged"
    assert [n.score for n in retrieved] == sorted((n.score for n in retrieved), reverse=True)
    best = retrieved[0].node
    assert "PARROT-8812" in best.text and best.ref_doc_id == "part-2"
    by_id = {d.doc_id: d for d in documents}
    for hit in retrieved:
        meta = hit.node.metadata
        source = by_id[meta["doc_id"]]
        assert source.text[meta["start"] : meta["end"]] == hit.node.text
        assert (hit.node.start_char_idx, hit.node.end_char_idx) == (meta["start"], meta["end"])
        assert meta["title"] == source.metadata["title"], "the document's metadata is kept"
        assert meta["memory_id"] == f"{source.doc_id}#memory" and meta["memory_file"].startswith(f"{MEMORY_FOLDER}/")
        assert hit.node.node_id == f"{meta['memory_id']}/segment-{meta['segment']}"
        assert not set(PROVENANCE_KEYS) & set(hit.node.get_metadata_str(mode="llm").split(": ")), "provenance is not LLM content"
    # Over one document, the ranking is exactly lcirc_plugins.model.passages.rank_passages.
    single = CompressedMemoryIndex.from_documents(documents[1:], llm=index.llm)
    expected = rank_passages(single.memory("part-2#memory"), index.llm.model.tokenizer, QUESTION, top_k=3)
    got = single.as_retriever(similarity_top_k=3).retrieve(QUESTION)
    assert [(p.segment, p.score, p.text) for p in expected] == [(n.node.metadata["segment"], n.score, n.node.text) for n in got]


def test_index_persists_as_safetensors_and_reloads_with_identical_results(make_llm, documents, tmp_path):
    llm = make_llm(max_new_tokens=8)
    index = CompressedMemoryIndex.from_documents(documents, llm=llm)
    before_hits = hits(index.as_retriever().retrieve(QUESTION))
    before = index.as_query_engine().query(QUESTION)
    storage = tmp_path / "storage"
    index.storage_context.persist(persist_dir=str(storage))

    memory_files = sorted(p.name for p in (storage / MEMORY_FOLDER).iterdir())
    assert len(memory_files) == 2 and all(name.endswith(".safetensors") for name in memory_files)
    assert not [p for p in storage.rglob("*") if p.suffix in {".pkl", ".pickle", ".pt", ".bin"}], "never pickle"

    loaded = load_index_from_storage(StorageContext.from_defaults(persist_dir=str(storage)), llm=llm)
    shortcut = CompressedMemoryIndex.from_persist_dir(storage, llm=llm)
    for again in (loaded, shortcut):
        assert isinstance(again, CompressedMemoryIndex) and again.index_id == index.index_id
        for memory_id in index.memory_ids:
            assert torch.equal(again.memory(memory_id).features, index.memory(memory_id).features)
        assert hits(again.as_retriever().retrieve(QUESTION)) == before_hits
        response = again.as_query_engine().query(QUESTION)
        assert response.response == before.response
        assert hits(response.source_nodes) == hits(before.source_nodes)


def test_a_moved_storage_folder_loads_with_persist_dir(make_llm, documents, tmp_path):
    llm = make_llm()
    index = CompressedMemoryIndex.from_documents(documents, llm=llm)
    index.storage_context.persist(persist_dir=str(tmp_path / "old"))
    expected = hits(index.as_retriever().retrieve(QUESTION))
    shutil.move(tmp_path / "old", tmp_path / "new")
    with pytest.raises(CorruptFileError, match="persist_dir"):
        load_index_from_storage(StorageContext.from_defaults(persist_dir=str(tmp_path / "new")), llm=llm)
    moved = load_index_from_storage(
        StorageContext.from_defaults(persist_dir=str(tmp_path / "new")), llm=llm, persist_dir=tmp_path / "new"
    )
    assert hits(moved.as_retriever().retrieve(QUESTION)) == expected


def test_query_engine_answers_from_the_memory_of_the_retrieved_document(make_llm, documents):
    llm = make_llm(max_new_tokens=8, gate_init=0.5)  # open gates: the memory changes the output
    index = CompressedMemoryIndex.from_documents(documents, llm=llm)
    engine = index.as_query_engine(similarity_top_k=2)
    calls: list[int] = []
    handle = llm.model.adapter.gca["0"].register_forward_hook(lambda *args: calls.append(1))
    try:
        response = engine.query(QUESTION)
    finally:
        handle.remove()
    assert isinstance(response, Response) and calls, "the decoder read a memory"
    assert [n.node.node_id for n in response.source_nodes] == [
        n.node.node_id for n in index.as_retriever(similarity_top_k=2).retrieve(QUESTION)
    ]
    order = list(dict.fromkeys(n.node.metadata["memory_id"] for n in response.source_nodes))
    assert response.metadata["memory_ids"] == order and order[0] == "part-2#memory"
    memories = [index.memory(m) for m in order]
    assert response.metadata["memory_tokens"] == sum(m.num_tokens for m in memories)
    assert response.response == llm.answer(QUESTION, memories)
    assert response.response != llm.answer(QUESTION, [index.memory("part-1#memory")]), "another memory, another answer"


def test_query_engine_streaming_and_async(make_llm, documents):
    llm = make_llm(max_new_tokens=8)
    index = CompressedMemoryIndex.from_documents(documents, llm=llm)
    expected = index.as_query_engine().query(QUESTION)
    streaming = index.as_query_engine(streaming=True).query(QUESTION)
    assert isinstance(streaming, StreamingResponse)
    assert "".join(streaming.response_gen).strip() == expected.response
    assert hits(streaming.source_nodes) == hits(expected.source_nodes)

    async def ask() -> tuple[Response, str, list]:
        answered = await index.as_query_engine().aquery(QUESTION)
        streamed = await index.as_query_engine(streaming=True).aquery(QUESTION)
        assert isinstance(streamed, AsyncStreamingResponse)
        return answered, "".join([piece async for piece in streamed.async_response_gen()]), streamed.source_nodes

    answered, streamed_text, streamed_sources = asyncio.run(ask())
    assert answered.response == expected.response and streamed_text.strip() == expected.response
    assert hits(answered.source_nodes) == hits(streamed_sources) == hits(expected.source_nodes)


def test_another_llm_reads_the_passages(make_llm, documents):
    index = CompressedMemoryIndex.from_documents(documents, llm=make_llm())
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=2).query(QUESTION)
    assert "PARROT-8812" in response.response, "the passage text is in the other LLM's prompt"
    assert "memory_file" not in response.response and "start" not in response.response
    assert response.source_nodes[0].node.metadata["doc_id"] == "part-2"


def test_qd_model_recompresses_the_memory_for_the_question(make_llm, documents):
    llm = make_llm(query_dependent=True, gate_init=0.5)
    index = CompressedMemoryIndex.from_documents(documents[1:], llm=llm)
    memory = index.memory("part-2#memory")
    prepared = llm.prepare_answer(QUESTION, memory)
    assert prepared.rows.features.shape == memory.features.shape and not torch.allclose(prepared.rows.features, memory.features)
    assert index.as_query_engine().query(QUESTION).response == llm.answer(QUESTION, memory)


def test_insert_and_delete_documents(make_llm, documents, sample_text, tmp_path):
    index = CompressedMemoryIndex.from_documents(documents[:1], llm=make_llm())
    index.insert(documents[1])
    assert index.memory_ids == ["part-1#memory", "part-2#memory"]
    assert index.as_retriever(similarity_top_k=1).retrieve(QUESTION)[0].node.ref_doc_id == "part-2"
    index.storage_context.persist(persist_dir=str(tmp_path))
    assert len(list((tmp_path / MEMORY_FOLDER).iterdir())) == 2
    index.delete_ref_doc("part-2", delete_from_docstore=True)
    assert index.memory_ids == ["part-1#memory"] and "part-2" not in index.ref_doc_info
    assert all(n.node.ref_doc_id == "part-1" for n in index.as_retriever().retrieve(QUESTION))
    index.storage_context.persist(persist_dir=str(tmp_path))
    assert len(list((tmp_path / MEMORY_FOLDER).iterdir())) == 1, "the deleted document's memory file is gone"


def test_bad_inputs_raise_lcirc_errors(make_llm, documents, tmp_path, clean_settings):
    llm = make_llm()
    with pytest.raises(EmptyInputError, match="no documents"):
        CompressedMemoryIndex.from_documents([], llm=llm)
    with pytest.raises(EmptyInputError, match="'blank'"):
        CompressedMemoryIndex.from_documents([Document(text="  \n ", id_="blank")], llm=llm)
    clean_settings._llm = None
    with pytest.raises(ConfigError, match="LCIRCLLM"):
        CompressedMemoryIndex.from_documents(documents, llm=MockLLM())
    with pytest.raises(ConfigError, match="LCIRCLLM"):
        CompressedMemoryIndex.from_documents(documents)
    index = CompressedMemoryIndex.from_documents(documents, llm=llm)
    for query in ("", "   "):
        with pytest.raises(EmptyInputError, match="query is empty"):
            index.as_retriever().retrieve(query)
        with pytest.raises(EmptyInputError, match="query is empty"):
            index.as_query_engine().query(query)
    with pytest.raises(ConfigError, match="similarity_top_k"):
        index.as_retriever(similarity_top_k=0)
    with pytest.raises(ConfigError, match="response_mode"):
        index.as_query_engine(response_mode="tree_summarize")
    index.storage_context.persist(persist_dir=str(tmp_path))
    other = make_llm(seed=1)  # another adapter (other random weights)
    with pytest.raises(MemoryMismatchError, match="compress the text again"):
        load_index_from_storage(StorageContext.from_defaults(persist_dir=str(tmp_path)), llm=other)
    (tmp_path / MEMORY_FOLDER / next(iter(index.index_struct.memory_files.values()))).write_bytes(b"not a memory")
    with pytest.raises(CorruptFileError):
        CompressedMemoryIndex.from_persist_dir(Path(tmp_path), llm=llm)
