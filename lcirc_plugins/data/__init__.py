"""Documents (txt, markdown, PDF, EPUB) as validated text, long-text tokenization, and synthetic tasks."""

from __future__ import annotations

from lcirc_plugins._lazy import lazy_exports

# Lazy: reading a document must not import torch and transformers (segmentation does).
_DOCUMENTS = ("SUPPORTED_EXTENSIONS", "Document", "read_document", "read_text_bytes", "validate_text")
_QA = ("QAGenerationStats", "generate_qa_jsonl")
_SEGMENTATION = ("TokenizedText", "tokenize_with_offsets")
_SYNTHETIC = (
    "TASKS",
    "LongContextExample",
    "book_cloze",
    "book_facts",
    "load_haystack",
    "make_dataset",
    "niah_multikey",
    "niah_multiquery",
    "niah_multivalue",
    "niah_single",
    "passkey",
    "read_jsonl",
    "write_jsonl",
)
__getattr__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(_DOCUMENTS, ".documents"),
        **dict.fromkeys(_QA, ".qa_generation"),
        **dict.fromkeys(_SEGMENTATION, ".segmentation"),
        **dict.fromkeys(_SYNTHETIC, ".synthetic"),
    },
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
