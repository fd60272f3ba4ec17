"""Documents (txt, markdown, PDF, EPUB) as validated text, long-text tokenization, and synthetic tasks."""

from __future__ import annotations

from lcirc_plugins.data.documents import SUPPORTED_EXTENSIONS, Document, read_document, read_text_bytes, validate_text
from lcirc_plugins.data.qa_generation import QAGenerationStats, generate_qa_jsonl
from lcirc_plugins.data.segmentation import TokenizedText, tokenize_with_offsets
from lcirc_plugins.data.synthetic import (
    TASKS,
    LongContextExample,
    book_cloze,
    book_facts,
    load_haystack,
    make_dataset,
    niah_multikey,
    niah_multiquery,
    niah_multivalue,
    niah_single,
    passkey,
    read_jsonl,
    write_jsonl,
)

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "TASKS",
    "Document",
    "LongContextExample",
    "QAGenerationStats",
    "TokenizedText",
    "book_cloze",
    "book_facts",
    "generate_qa_jsonl",
    "load_haystack",
    "make_dataset",
    "niah_multikey",
    "niah_multiquery",
    "niah_multivalue",
    "niah_single",
    "passkey",
    "read_document",
    "read_jsonl",
    "read_text_bytes",
    "tokenize_with_offsets",
    "validate_text",
    "write_jsonl",
]
