"""LCIRCMemoryQA: an LCEL runnable over compressed documents: invoke, batch, stream, async, composition, errors."""

from __future__ import annotations

from operator import itemgetter

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from lcirc_plugins.errors import ConfigError, EmptyInputError, MemoryMismatchError
from lcirc_plugins.langchain import ChatLCIRC, LCIRCMemoryQA, LCIRCMemoryRetriever
from lcirc_plugins.model.prompting import DEFAULT_SYSTEM_PROMPT

QUESTION = "Who called roughly for a glass of rum?"


@pytest.fixture(scope="module")
def chat(lc_model) -> ChatLCIRC:
    return ChatLCIRC(model=lc_model, max_new_tokens=8)


@pytest.fixture(scope="module")
def qa(chat) -> LCIRCMemoryQA:
    return LCIRCMemoryQA(llm=chat, k=2)


@pytest.fixture(scope="module")
def docs(book_text) -> list[Document]:
    return [Document(page_content=book_text, metadata={"source": "sample-book.txt"}, id="book")]


class _ChatRuns(BaseCallbackHandler):
    """Records the chat-model runs a chain starts (to see that the QA call is traced as a child run)."""

    def __init__(self) -> None:
        self.runs: list[dict] = []

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kwargs) -> None:
        self.runs.append({"parent": parent_run_id, "messages": messages})


def test_answer_reads_the_documents_and_cites_the_best_passages(qa, chat, docs, book_memory):
    out = qa.invoke({"question": QUESTION, "documents": docs})
    assert set(out) == {"answer", "sources", "provenance"} and out["answer"]
    expected = chat.invoke([("system", DEFAULT_SYSTEM_PROMPT), ("human", QUESTION)], memory=book_memory).content
    assert out["answer"] == expected, "the answer is the chat model's, reading the documents' memory"
    assert out["answer"] != chat.invoke([("system", DEFAULT_SYSTEM_PROMPT), ("human", QUESTION)]).content
    assert len(out["sources"]) == 2 and "rum" in out["sources"][0].page_content
    for source in out["sources"]:
        assert docs[0].page_content[source.metadata["start"] : source.metadata["end"]] == source.page_content
        assert source.metadata["memory_id"] == "book" and source.metadata["source"] == "sample-book.txt"
    assert 1 <= len(out["provenance"]) <= 2, "the passages the answer read most, by the open gates' attention"
    for passage in out["provenance"]:
        assert passage.metadata["method"] == "attention" and passage.metadata["memory_id"] == "book"
        assert docs[0].page_content[passage.metadata["start"] : passage.metadata["end"]] == passage.page_content


def test_documents_are_compressed_once_and_reused(qa, docs):
    first = qa._compress(docs)
    second = qa._compress([Document(page_content=docs[0].page_content)])
    assert first[0] is second[0], "same content and adapter: the cached memory is reused"
    plain = qa.invoke({"question": QUESTION, "documents": [docs[0].page_content]})
    assert plain["answer"] == qa.invoke({"question": QUESTION, "documents": docs})["answer"]
    assert plain["sources"][0].metadata["memory_id"] == "doc-0" and "source" not in plain["sources"][0].metadata


def test_memory_input_a_memory_a_list_or_a_retriever(qa, lc_model, docs, book_memory):
    by_docs = qa.invoke({"question": QUESTION, "documents": docs})
    by_memory = qa.invoke({"question": QUESTION, "memory": book_memory})
    retriever = LCIRCMemoryRetriever(model=lc_model, memories=[book_memory], memory_ids=["book"])
    by_retriever = qa.invoke({"question": QUESTION, "memory": retriever})
    assert by_docs["answer"] == by_memory["answer"] == by_retriever["answer"]
    assert by_retriever["sources"] == by_docs["sources"] == retriever.invoke(QUESTION, k=2)
    assert by_memory["sources"][0].metadata["memory_id"] == "memory-0"
    assert qa.invoke({"question": QUESTION, "memory": [book_memory]}) == by_memory


def test_composes_with_pipe_and_runs_in_runnable_parallel(qa, docs):
    chain = {"question": RunnablePassthrough(), "documents": RunnableLambda(lambda _: docs)} | qa | itemgetter("answer")
    answer = chain.invoke(QUESTION)
    assert answer == qa.invoke({"question": QUESTION, "documents": docs})["answer"]
    both = RunnableParallel(qa=qa, question=itemgetter("question")).invoke({"question": QUESTION, "documents": docs})
    assert both["qa"]["answer"] == answer and both["question"] == QUESTION
    assert "".join(chain.stream(QUESTION)) == answer, "the answer streams through the whole chain"


def test_a_qa_over_a_retriever_needs_only_the_question(chat, lc_model, book_memory):
    retriever = LCIRCMemoryRetriever(model=lc_model, memories=[book_memory], memory_ids=["book"])
    chain = {"question": RunnablePassthrough()} | LCIRCMemoryQA(llm=chat, retriever=retriever, k=2)
    out = chain.invoke(QUESTION)
    assert out == LCIRCMemoryQA(llm=chat, k=2).invoke({"question": QUESTION, "memory": retriever})
    assert out["sources"] == retriever.invoke(QUESTION, k=2)
    # A retriever returned by a lambda is invoked by LCEL: its results are not memories, and the error says so.
    wrong = {"question": RunnablePassthrough(), "memory": RunnableLambda(lambda _: retriever)} | LCIRCMemoryQA(llm=chat)
    with pytest.raises(TypeError, match="retriever's results"):
        wrong.invoke(QUESTION)


def test_batch_equals_one_at_a_time(qa, docs):
    inputs = [{"question": QUESTION, "documents": docs}, {"question": "What was painted on the signboard?", "documents": docs}]
    assert qa.batch(inputs) == [qa.invoke(i) for i in inputs]


def test_stream_gives_sources_first_then_the_answer_in_pieces_then_its_provenance(qa, docs):
    value = {"question": QUESTION, "documents": docs}
    chunks = list(qa.stream(value))
    assert list(chunks[0]) == ["sources"] and all(list(c) == ["answer"] for c in chunks[1:-1]) and len(chunks) > 3
    assert list(chunks[-1]) == ["provenance"]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged == qa.invoke(value)


async def test_async_invoke_stream_and_batch(qa, docs):
    value = {"question": QUESTION, "documents": docs}
    expected = qa.invoke(value)
    assert await qa.ainvoke(value) == expected
    chunks = [c async for c in qa.astream(value)]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged == expected
    assert await qa.abatch([value, value]) == [expected, expected]


def test_bound_kwargs_and_callbacks_reach_the_chat_model(qa, docs):
    handler = _ChatRuns()
    out = qa.bind(max_new_tokens=3, min_new_tokens=3).invoke({"question": QUESTION, "documents": docs}, {"callbacks": [handler]})
    assert len(handler.runs) == 1 and handler.runs[0]["parent"] is not None, "the chat call is a child run of the QA run"
    assert handler.runs[0]["messages"][0][-1].content == QUESTION
    assert len(qa.llm.lcirc_model.tokenizer(out["answer"], add_special_tokens=False)["input_ids"]) <= 4


def test_bad_inputs_give_clear_errors(qa, docs, foreign_memory):
    with pytest.raises(EmptyInputError, match="question is empty"):
        qa.invoke({"question": "  ", "documents": docs})
    with pytest.raises(EmptyInputError, match="no documents"):
        qa.invoke({"question": QUESTION})
    with pytest.raises(EmptyInputError, match="no documents"):
        qa.invoke({"question": QUESTION, "documents": []})
    with pytest.raises(EmptyInputError, match="document 0 .*no text"):
        qa.invoke({"question": QUESTION, "documents": [Document(page_content=" ")]})
    with pytest.raises(MemoryMismatchError, match="adapter"):
        qa.invoke({"question": QUESTION, "memory": foreign_memory})
    with pytest.raises(MemoryMismatchError, match="adapter"):
        list(qa.stream({"question": QUESTION, "memory": foreign_memory}))
    with pytest.raises(ConfigError, match="not both"):
        qa.invoke({"question": QUESTION, "documents": docs, "memory": foreign_memory})
    with pytest.raises(TypeError, match="takes a dict"):
        qa.invoke(QUESTION)  # type: ignore[arg-type]


def test_model_shortcut_builds_the_chat_model(lc_model):
    qa = LCIRCMemoryQA(model=lc_model, k=1)
    assert isinstance(qa.llm, ChatLCIRC) and qa.llm.lcirc_model is lc_model
    with pytest.raises(ConfigError, match="not both"):
        LCIRCMemoryQA(model=lc_model, llm=qa.llm)
