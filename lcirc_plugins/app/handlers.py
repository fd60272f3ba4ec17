"""What the app does, as plain functions (nothing here imports gradio, so every handler runs and is tested
without a server): the session and context (:mod:`.context`), adding books (:mod:`.uploads`), answering in the
chat (:mod:`.chat`) and the passages behind an answer (:mod:`.sources`). ``ui.py`` wires them to Gradio.
"""

from __future__ import annotations

from .chat import (
    NO_BOOK_MESSAGE,
    NO_TEXT,
    PLAIN_MODE,
    QD_MODE,
    WAITING_NOTE,
    ask,
    check_book_keys,
    check_choice,
    check_number,
    check_text,
)
from .context import AppContext, book_choices, new_session
from .sources import BM25_NOTE, PROVENANCE_NOTE, answer_sources, provenance_figure, provenance_markdown
from .uploads import UPLOAD_EXTENSIONS, Message, UploadResult, add_books

__all__ = [
    "BM25_NOTE",
    "NO_BOOK_MESSAGE",
    "NO_TEXT",
    "PLAIN_MODE",
    "PROVENANCE_NOTE",
    "QD_MODE",
    "UPLOAD_EXTENSIONS",
    "WAITING_NOTE",
    "AppContext",
    "Message",
    "UploadResult",
    "add_books",
    "answer_sources",
    "ask",
    "book_choices",
    "check_book_keys",
    "check_choice",
    "check_number",
    "check_text",
    "new_session",
    "provenance_figure",
    "provenance_markdown",
]
