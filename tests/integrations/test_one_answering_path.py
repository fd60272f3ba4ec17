"""Every front end answers through ``LCIRCModel.prepare_answer`` and ``LCIRCModel.provenance``: the app, LlamaIndex,
LangChain and the CLI give the same answer and the same passages for the same memory and question.

With the real backbone and the shipped adapter (open gates, so provenance comes from attention).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import SHARED_DATA

from lcirc_plugins.model.lcirc_model import DEFAULT_ADAPTER_DIR, LCIRCModel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not DEFAULT_ADAPTER_DIR.is_dir(), reason="no default adapter is shipped in this checkout"),
]

QUESTION = "Who came to the Admiral Benbow inn?"
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def model() -> LCIRCModel:
    model = LCIRCModel.from_pretrained("default")
    yield model
    model.injector.detach()


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (SHARED_DATA / "books" / "stevenson-treasure-island.txt").read_text(encoding="utf-8-sig")
    start = text.index("The Old Sea-dog at the Admiral Benbow")
    path = tmp_path_factory.mktemp("book") / "treasure.txt"
    path.write_text(text[start : start + 3000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(model: LCIRCModel, book: Path) -> tuple[str, list[tuple[int, int, int]]]:
    memory = model.compress(book.read_text(encoding="utf-8"))
    prepared = model.prepare_answer(QUESTION, memory, max_new_tokens=NEW_TOKENS)
    answer = model.generate_text(prepared, max_new_tokens=NEW_TOKENS)[0]
    found = model.provenance(prepared, answer)
    assert found.method == "attention" and found.passages, "the shipped adapter's gates are open"
    return answer, [(p.segment, p.start, p.end) for p in found.passages]


def test_the_app_gives_the_models_answer_and_passages(model, book, reference, tmp_path):
    from lcirc_plugins.app import handlers

    ctx = handlers.AppContext.create(model, tmp_path / "data")
    key = handlers.add_books(ctx, None, [str(book)]).session["books"][0]
    history, _, _ = list(handlers.ask(ctx, {"books": [key]}, QUESTION, [key], max_new_tokens=NEW_TOKENS))[-1]
    prepared = model.prepare_answer(QUESTION, ctx.library.memory(key), max_new_tokens=NEW_TOKENS)
    records, markdown, _ = handlers.answer_sources(ctx, [key], prepared, history[-1]["content"])
    assert history[-1]["content"] == reference[0]
    assert [(r["segment"], r["start"], r["end"]) for r in records] == reference[1]
    assert handlers.PROVENANCE_NOTE in markdown


def test_llama_index_gives_the_models_answer_and_passages(model, book, reference):
    from llama_index.core import Document

    from lcirc_plugins.llama_index import LCIRCLLM, CompressedMemoryIndex

    index = CompressedMemoryIndex.from_documents([Document(text=book.read_text(encoding="utf-8"))], llm=LCIRCLLM(model=model))
    response = index.as_query_engine(generate_kwargs={"max_new_tokens": NEW_TOKENS}).query(QUESTION)
    assert response.response == reference[0]
    found = response.metadata["provenance"]
    assert [(p["segment"], p["start"], p["end"]) for p in found] == reference[1] and found[0]["method"] == "attention"


def test_langchain_gives_the_models_answer_and_passages(model, book, reference):
    from langchain_core.documents import Document

    from lcirc_plugins.langchain import ChatLCIRC, LCIRCMemoryQA

    qa = LCIRCMemoryQA(llm=ChatLCIRC(model=model, max_new_tokens=NEW_TOKENS), k=3)
    out = qa.invoke({"question": QUESTION, "documents": [Document(page_content=book.read_text(encoding="utf-8"))]})
    assert out["answer"] == reference[0]
    assert [(d.metadata["segment"], d.metadata["start"], d.metadata["end"]) for d in out["provenance"]] == reference[1]


def test_the_cli_gives_the_models_answer_and_passages(book, reference, capsys):
    from lcirc_plugins.cli import main

    argv = ["ask", str(book), QUESTION, "--no-stream", "--sources", "--max-new-tokens", str(NEW_TOKENS)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert reference[0] in out.splitlines()
    passages = [tuple(map(int, m)) for m in re.findall(r"segment (\d+), characters (\d+)-(\d+)", out)]
    assert passages == reference[1]
