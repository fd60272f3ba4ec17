"""The ``lcirc-app`` Gradio app: a library of compressed books, a chat about them, and answer provenance.

``handlers`` and ``library`` hold the logic (no gradio import); ``ui`` builds the ``gr.Blocks``; run it
with ``lcirc-app`` or ``python -m lcirc_plugins.app``.
"""

from .handlers import AppContext, add_books, ask, book_choices, new_session, provenance
from .library import Library, sanitize_filename

__all__ = ["AppContext", "Library", "add_books", "ask", "book_choices", "new_session", "provenance", "sanitize_filename"]
