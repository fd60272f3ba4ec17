"""Loading documents (txt, markdown, PDF, EPUB) and uploads as validated plain text."""

from __future__ import annotations

from lcirc_plugins.data.documents import (
    SUPPORTED_EXTENSIONS,
    Document,
    read_document,
    read_text_bytes,
    validate_text,
)

__all__ = ["SUPPORTED_EXTENSIONS", "Document", "read_document", "read_text_bytes", "validate_text"]
