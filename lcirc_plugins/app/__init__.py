"""The ``lcirc-app`` Gradio app: a library of compressed books, a chat about them, and answer provenance.

``handlers`` and ``library`` hold the logic (no gradio import); ``ui`` builds the ``gr.Blocks``; run it
with ``lcirc-app`` or ``python -m lcirc_plugins.app``. The exports load lazily, so ``lcirc-app --help``
imports no torch.
"""

from .._lazy import lazy_exports

_HANDLERS = ("AppContext", "add_books", "ask", "book_choices", "new_session", "provenance")
__getattr__ = lazy_exports(
    __name__, {**dict.fromkeys(_HANDLERS, ".handlers"), "Library": ".library", "sanitize_filename": ".library"}
)

__all__ = ["AppContext", "Library", "add_books", "ask", "book_choices", "new_session", "provenance", "sanitize_filename"]
