"""Slow LangChain tests: a whole book through the chain with the shipped default adapter, and the docstring
examples run verbatim on the real SmolLM2 backbone (offline)."""

from __future__ import annotations

import re

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnablePassthrough
from support import SHARED_DATA

from lcirc_plugins import LCIRCModel
from lcirc_plugins.errors import AdapterNotFoundError
from lcirc_plugins.langchain import LCIRC, ChatLCIRC, LCIRCMemoryQA, LCIRCMemoryRetriever
from lcirc_plugins.model.prompting import DEFAULT_SYSTEM_PROMPT

BOOK = SHARED_DATA / "books" / "stevenson-treasure-island.txt"
QUESTION = "What is the name of the inn kept by Jim Hawkins's mother and father?"


@pytest.fixture(scope="module")
def default_model() -> LCIRCModel:
    """The shipped default adapter on its backbone; a clear failure (not a skip) when it is missing."""
    try:
        return LCIRCModel.from_pretrained("default")
    except AdapterNotFoundError as err:
        pytest.fail(f"this test needs the default adapter shipped in lcirc_plugins/adapters/default: {err}", pytrace=False)


@pytest.mark.slow
def test_book_qa_chain_with_the_default_adapter(default_model, tmp_path):
    if not BOOK.is_file():
        pytest.fail(f"{BOOK} is missing: the slow tests read the books in $LCIRC_SHARED_DATA/books", pytrace=False)
    text = BOOK.read_text(encoding="utf-8-sig")
    retriever = LCIRCMemoryRetriever.from_documents(
        [Document(page_content=text, metadata={"source": BOOK.name}, id="treasure-island")], model=default_model
    )
    memory = retriever.memories[0]
    assert memory.num_tokens > 80_000 and memory.spans[-1, 1] <= len(text)
    chat = ChatLCIRC(model=default_model, max_new_tokens=48)
    chain = {"question": RunnablePassthrough()} | LCIRCMemoryQA(llm=chat, retriever=retriever, k=3)

    out = chain.invoke(QUESTION)
    assert out["answer"].strip()
    assert any("Benbow" in source.page_content for source in out["sources"])
    for source in out["sources"]:
        assert text[source.metadata["start"] : source.metadata["end"]] == source.page_content
    streamed = "".join(chunk.get("answer", "") for chunk in chain.stream(QUESTION))
    assert streamed == out["answer"]

    messages = [("system", DEFAULT_SYSTEM_PROMPT), ("human", QUESTION)]
    reply = chat.invoke(messages, memory=memory)
    assert reply.content == out["answer"]
    assert reply.usage_metadata["input_token_details"]["compressed"] == memory.num_tokens
    assert reply.content != chat.invoke(messages).content, (
        "the trained adapter reads the book: its answer differs from the bare backbone's"
    )

    retriever.save(tmp_path / "ti")
    again = {"question": RunnablePassthrough()} | LCIRCMemoryQA(
        llm=chat, retriever=LCIRCMemoryRetriever.load(tmp_path / "ti", model=default_model), k=3
    )
    assert again.invoke(QUESTION) == out


def python_blocks(doc: str) -> list[str]:
    """The ```python blocks of a docstring, dedented."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", doc, flags=re.DOTALL | re.MULTILINE)
    return ["\n".join(line[len(indent) :] for line in body.splitlines()) for indent, body in blocks]


@pytest.mark.slow
@pytest.mark.parametrize("cls", [ChatLCIRC, LCIRC, LCIRCMemoryRetriever, LCIRCMemoryQA], ids=lambda c: c.__name__)
def test_docstring_examples_run_offline(cls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save write here
    blocks = python_blocks(cls.__doc__ or "")
    assert len(blocks) >= 3, "Instantiate / Invoke / Stream examples"
    namespace: dict = {}
    try:
        for block in blocks:
            exec(compile(block, f"<{cls.__name__} docstring>", "exec"), namespace)  # noqa: S102 - our own docstrings
    finally:
        model = namespace.get("model") or getattr(namespace.get("llm"), "model", None)
        if isinstance(model, LCIRCModel):
            model.injector.detach()
