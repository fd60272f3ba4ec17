"""Documents (txt, markdown, PDF, EPUB) as validated text, long-text tokenization, and synthetic tasks."""

from __future__ import annotations

from lcirc_plugins._lazy import lazy_exports
from lcirc_plugins.data.documents import SUPPORTED_EXTENSIONS, Document, read_document, read_text_bytes, validate_text
from lcirc_plugins.data.qa_generation import QAGenerationStats, generate_qa_jsonl
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

# Tokenization imports torch and transformers: loaded on first use, so reading a document stays light.
__getattr__ = lazy_exports(__name__, {"TokenizedText": ".segmentation", "tokenize_with_offsets": ".segmentation"})

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
