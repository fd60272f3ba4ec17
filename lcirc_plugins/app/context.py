"""What every handler shares: the loaded model, the book library and the limits (``AppContext``), and a session.

A *session* is a plain dict (kept per browser tab in ``gr.State``): the books this user added and nothing else,
so users never see each other's chats.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model.lcirc_model import LCIRCModel
from ..model.status import ModelStatus, model_status
from .library import Library


@dataclass
class AppContext:
    """Everything the handlers share: the model, the library and the limits."""

    model: LCIRCModel
    library: Library
    max_upload_bytes: int = 50 * 1024 * 1024
    share_library: bool = True  # False: a session sees only the books it uploaded itself
    top_k: int = 3
    adapter: str | None = None  # how the adapter was named ("default" or a directory), for the status line

    @classmethod
    def create(cls, model: LCIRCModel, data_dir: str | Path, **kwargs: Any) -> AppContext:
        return cls(model=model, library=Library(data_dir, model), **kwargs)

    @functools.cached_property
    def status(self) -> ModelStatus:
        return model_status(self.model, self.adapter)

    @property
    def query_dependent(self) -> bool:
        return bool(self.model.config.query_dependent)


def new_session() -> dict[str, Any]:
    return {"books": []}


def book_choices(ctx: AppContext, session: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, key) of the books this session may pick: its own, plus the shared library if enabled."""
    mine = [k for k in session.get("books", []) if ctx.library.get(k)]
    keys = mine + ([e.key for e in ctx.library.books() if e.key not in mine] if ctx.share_library else [])
    return [(ctx.library.get(k).label, k) for k in keys]
