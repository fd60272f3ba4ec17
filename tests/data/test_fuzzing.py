"""Property-based fuzzing (hypothesis) of everything that takes user input: the document loaders, the
tokenizer segmentation, the model's compress/answer, and the integrations' public methods.

The property is the one the error design promises: any input either works or raises an ``LCIRCError``
subclass with a message; nothing else escapes (no ``IndexError`` from an empty tensor, no pypdf or zipfile
exception, no ``UnicodeEncodeError`` from a lone surrogate). Each property runs twice: a few dozen
examples in the default run and many more in a ``slow`` variant of the same name plus ``_thorough``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from document_files import make_epub, make_pdf
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from support import FAMILIES, SAMPLE_BOOK, TINY, one_torch_thread
from transformers import AutoModelForCausalLM

from lcirc_plugins import LCIRCConfig, LCIRCModel
from lcirc_plugins.data import read_document, read_text_bytes, validate_text
from lcirc_plugins.data.segmentation import segment_spans, tokenize_with_offsets
from lcirc_plugins.errors import LCIRCError

FAST_EXAMPLES, THOROUGH_EXAMPLES = 25, 400


def fuzz(
    check: Callable[..., None], *strategies: st.SearchStrategy, fast: int = FAST_EXAMPLES, always: Sequence[tuple] = ()
) -> tuple[Any, Any]:
    """The default-run test (``fast`` examples) and its slow variant (``THOROUGH_EXAMPLES``), from one property.

    ``always`` lists inputs tried on every run (inputs that once broke it). ``database=None``: no
    ``.hypothesis`` folder in the checkout; a failure prints its minimal example.
    """

    def variant(examples: int) -> Any:
        options = settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
        test = given(*strategies)(check)
        for case in always:
            test = example(*case)(test)
        return options(test)

    return variant(fast), pytest.mark.slow(variant(THOROUGH_EXAMPLES))


# ----- strategies -----------------------------------------------------------------------------------------

WORDS = ["the", "captain", "Jim", "Hawkins", "treasure", "map", "rum", "ship", "Silver", ".", ",", "?", "\n\n", "CHAPTER", "I"]
ODD = " \t\n\r\x00\x0b\x0c\x1c\x1f\x7f\x85\xa0\u2028\u3000\u200b\u200d\ufeff\ufffd\U0001f600é\u0301"
TEXT = st.one_of(
    st.text(max_size=300),  # any code point but lone surrogates
    st.text(st.characters(categories=["Cs", "L", "N", "P", "Z"]), max_size=60),  # lone surrogates among letters
    st.text(st.sampled_from(ODD), max_size=120),  # controls, odd whitespace, joiners, BOM
    st.lists(st.sampled_from(WORDS), max_size=600).map(" ".join),  # word-like text up to ~3,000 chars
    st.tuples(st.lists(st.sampled_from(WORDS), min_size=1, max_size=20), st.integers(1, 200)).map(
        lambda t: " ".join(t[0] * t[1])  # long repetitive text: past the 256-token window, many segments
    ),
)
# Inputs every text property tries: lone surrogates (once crashed the tokenizer), NUL, empty, blank, BOM only.
ALWAYS_TEXT = [("\ud800",), ("Jim \udfff Hawkins",), ("\x00",), ("",), (" \n\t ",), ("\ufeff",)]
BYTES = st.one_of(
    st.binary(max_size=3000),
    TEXT.flatmap(lambda t: st.sampled_from(["utf-8", "utf-16", "cp1252", "latin-1"]).map(lambda e: t.encode(e, "replace"))),
)


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """A valid file with a few bytes replaced, cut or inserted, or truncated: what damaged downloads look like."""
    edits = st.lists(st.tuples(st.integers(0, len(base)), st.integers(0, 32), st.binary(max_size=32)), min_size=1, max_size=4)

    def apply(changes: list[tuple[int, int, bytes]]) -> bytes:
        data = bytearray(base)
        for at, cut, insert in changes:
            data[at : at + cut] = insert
        return bytes(data)

    return st.one_of(edits.map(apply), st.integers(0, len(base)).map(lambda n: base[:n]))


def _allowed(call: Callable[[], Any]) -> Any:
    """Run ``call``; an ``LCIRCError`` is an accepted outcome (returns None), anything else fails the test."""
    try:
        return call()
    except LCIRCError as err:
        assert str(err), "every error carries a message"
        return None


# ----- document loaders -----------------------------------------------------------------------------------


def read_text_bytes_property(data: bytes) -> None:
    text = _allowed(lambda: read_text_bytes(data))
    assert text is None or (isinstance(text, str) and text.strip())


test_read_text_bytes_decodes_or_raises_lcirc_errors, test_read_text_bytes_thorough = fuzz(read_text_bytes_property, BYTES)


def validate_text_property(text: str) -> None:
    result = _allowed(lambda: validate_text(text))
    assert result is None or result == text


test_validate_text_accepts_or_raises_lcirc_errors, test_validate_text_thorough = fuzz(
    validate_text_property, TEXT, always=ALWAYS_TEXT
)


def _valid_files() -> dict[str, bytes]:
    """One small valid PDF and EPUB, the seeds of the damaged-file strategy."""
    with tempfile.TemporaryDirectory() as folder:
        chapters = [("one.xhtml", "One", "Chapter One", "<h1>One</h1><p>Fifteen men on a chest.</p>")]
        epub = make_epub(Path(folder) / "valid.epub", chapters).read_bytes()
    return {".pdf": make_pdf([["Fifteen men on the dead man's chest."], ["Yo-ho-ho!"]]), ".epub": epub}


VALID_FILES = _valid_files()
LATIN1 = st.text(st.characters(max_codepoint=255), max_size=80)


@st.composite
def upload_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, bytes): random bytes under any supported name, damaged valid PDFs/EPUBs, or valid ones with odd text."""
    suffix = draw(st.sampled_from([".txt", ".md", ".pdf", ".epub"]))
    kinds = [BYTES]
    if suffix == ".pdf":
        kinds += [mutations(VALID_FILES[".pdf"]), st.lists(st.lists(LATIN1, max_size=4), min_size=1, max_size=3).map(make_pdf)]
    if suffix == ".epub":
        kinds += [mutations(VALID_FILES[".epub"])]
    return suffix, draw(st.one_of(kinds))


def read_document_property(scratch: Path, case: tuple[str, bytes]) -> None:
    suffix, data = case
    path = scratch / f"upload{suffix}"
    path.write_bytes(data)
    document = _allowed(lambda: read_document(path))
    assert document is None or (document.text.strip() and all(0 <= o <= len(document.text) for _, o in document.sections))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


test_read_document_reads_or_raises_lcirc_errors, test_read_document_thorough = fuzz(
    read_document_property, upload_files(), fast=60
)


def epub_chapter_property(scratch: Path, bodies: list[str]) -> None:
    """Valid EPUBs whose chapters hold arbitrary markup-ish text (the XHTML-to-text code path)."""
    try:
        path = make_epub(scratch / "chapters.epub", [(f"c{i}.xhtml", "T", f"Toc {i}", b) for i, b in enumerate(bodies)])
    except Exception:  # noqa: BLE001 - ebooklib could not write it: not an input our loader can ever see
        assume(False)
    document = _allowed(lambda: read_document(path))
    if document is not None:  # a chapter without a heading is named by its TOC entry, so only offsets are checked
        offsets = [o for _, o in document.sections]
        assert offsets == sorted(offsets) and all(0 <= o <= len(document.text) for o in offsets)


# Characters XML allows (ebooklib cannot write others, so no real EPUB holds them), and markup fragments.
XML_TEXT = st.text(st.characters(exclude_categories=["Cs", "Cc"]) | st.sampled_from("\t\n\r"), max_size=40)
TAGS = ["<p>", "</p>", "<h1>", "</h1>", "<h2>", "<br/>", "&amp;", "&#0;", "&bogus;", "<script>", "</script>", "<", ">", "]]>"]
MARKUP = st.lists(st.sampled_from(TAGS) | XML_TEXT, max_size=12).map(
    lambda parts: f"<div>{''.join(parts)}</div>"
)  # ebooklib needs an element
test_epub_chapters_with_odd_markup_read_or_raise_lcirc_errors, test_epub_chapters_thorough = fuzz(
    epub_chapter_property, st.lists(MARKUP, min_size=1, max_size=3)
)


# ----- segmentation -----------------------------------------------------------------------------------------


def segmentation_property(smollm2_tokenizer: Any, text: str, chunk_chars: int, segment_len: int) -> None:
    """Chunked tokenization equals one-call tokenization, offsets lie inside the text, segments tile it in order."""
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in text))  # lone surrogates are refused before this point
    tokens = tokenize_with_offsets(smollm2_tokenizer, text, chunk_chars=chunk_chars)
    whole = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokens.ids.tolist() == whole
    assert bool((tokens.starts >= 0).all() and (tokens.ends <= len(text)).all() and (tokens.starts <= tokens.ends).all())
    assert bool((tokens.starts[1:] >= tokens.starts[:-1]).all())
    if len(tokens):
        spans = segment_spans(tokens.starts, tokens.ends, segment_len)
        assert spans.shape == (-(-len(tokens) // segment_len), 2)
        assert bool((spans[:, 0] <= spans[:, 1]).all() and (spans[1:, 0] >= spans[:-1, 0]).all())


test_segmentation_is_exact_and_in_bounds, test_segmentation_thorough = fuzz(
    segmentation_property, TEXT, st.integers(1, 64), st.integers(1, 40), fast=60
)


# ----- the model and the integrations (tiny random model, real tokenizer) ------------------------------------


@pytest.fixture(scope="module")
def fuzz_model(smollm2_tokenizer: Any) -> Iterator[LCIRCModel]:
    """A query-dependent tiny model with open gates, on its own backbone (its hooks stack with no other model)."""
    torch.manual_seed(0)
    backbone = AutoModelForCausalLM.from_config(FAMILIES["llama"](len(smollm2_tokenizer))).eval()
    model = LCIRCModel(backbone, smollm2_tokenizer, LCIRCConfig(**{**TINY, "gate_init": 0.5, "query_dependent": True}))
    with one_torch_thread():
        yield model
    model.injector.detach()


@pytest.fixture(scope="module")
def book_memory(fuzz_model: LCIRCModel) -> Any:
    return fuzz_model.compress(SAMPLE_BOOK.read_text(encoding="utf-8-sig")[:3000])


def compress_property(fuzz_model: LCIRCModel, text: str) -> None:
    memory = _allowed(lambda: fuzz_model.compress(text))
    if memory is not None:
        assert memory.num_chars == len(text) and memory.num_tokens > 0
        assert bool((memory.spans[:, 0] >= 0).all() and (memory.spans[:, 1] <= len(text)).all())


test_compress_works_or_raises_lcirc_errors, test_compress_thorough = fuzz(compress_property, TEXT, always=ALWAYS_TEXT)


def answer_property(fuzz_model: LCIRCModel, book_memory: Any, question: str) -> None:
    answer = _allowed(lambda: fuzz_model.answer(question, book_memory, max_new_tokens=2))
    assert answer is None or isinstance(answer, str)


test_answer_works_or_raises_lcirc_errors, test_answer_thorough = fuzz(answer_property, TEXT, always=ALWAYS_TEXT)


def llama_index_complete_property(fuzz_model: LCIRCModel, prompt: str) -> None:
    from lcirc_plugins.llama_index import LCIRCLLM

    response = _allowed(lambda: LCIRCLLM(model=fuzz_model, max_new_tokens=2).complete(prompt))
    assert response is None or isinstance(response.text, str)


test_llama_index_complete_works_or_raises_lcirc_errors, test_llama_index_complete_thorough = fuzz(
    llama_index_complete_property, TEXT, always=ALWAYS_TEXT
)


ROLES = st.sampled_from(["human", "ai", "system"])


def langchain_invoke_property(fuzz_model: LCIRCModel, messages: str | list[tuple[str, str]]) -> None:
    from lcirc_plugins.langchain import LCIRC, ChatLCIRC

    reply = _allowed(lambda: ChatLCIRC(model=fuzz_model, max_new_tokens=2).invoke(messages))
    assert reply is None or isinstance(reply.content, str)
    if isinstance(messages, str):  # the plain-text LLM takes strings only
        text = _allowed(lambda: LCIRC(model=fuzz_model, max_new_tokens=2).invoke(messages))
        assert text is None or isinstance(text, str)


test_langchain_invoke_works_or_raises_lcirc_errors, test_langchain_invoke_thorough = fuzz(
    langchain_invoke_property,
    TEXT | st.lists(st.tuples(ROLES, TEXT), max_size=4),
    always=[*ALWAYS_TEXT, ([("human", "\ud800")],)],
)


@pytest.fixture(scope="module")
def retrievers(fuzz_model: LCIRCModel) -> tuple[Any, Any]:
    """The LangChain and LlamaIndex retrievers over the same two short documents."""
    from langchain_core.documents import Document as LCDocument
    from llama_index.core import Document as LIDocument

    from lcirc_plugins.langchain import LCIRCMemoryRetriever
    from lcirc_plugins.llama_index import LCIRCLLM, CompressedMemoryIndex

    text = SAMPLE_BOOK.read_text(encoding="utf-8-sig")
    parts = [text[:2000], text[5000:7000]]
    langchain = LCIRCMemoryRetriever.from_documents([LCDocument(page_content=p) for p in parts], model=fuzz_model, k=2)
    index = CompressedMemoryIndex.from_documents([LIDocument(text=p) for p in parts], llm=LCIRCLLM(model=fuzz_model))
    return langchain, index.as_retriever(similarity_top_k=2)


def retriever_property(retrievers: tuple[Any, Any], query: str) -> None:
    langchain, llama_index = retrievers
    for results in (_allowed(lambda: langchain.invoke(query)), _allowed(lambda: llama_index.retrieve(query))):
        assert results is None or len(results) <= 2


test_retrievers_work_or_raise_lcirc_errors, test_retrievers_thorough = fuzz(retriever_property, TEXT, always=ALWAYS_TEXT)
