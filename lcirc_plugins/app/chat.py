"""Answering a question about the chosen books, streamed into the chat, with the passages behind the answer.

The answer goes through the model's one answering path (``LCIRCModel.prepare_answer``, then
``LCIRCModel.provenance`` once it is complete, :mod:`.sources`), as in the integrations and the CLI. The pure
checks of API input live here too: the UI always sends well-formed values, a client of the HTTP API may send
anything, and a malformed call becomes one ``InvalidRequestError`` naming the field (``api_checks.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import InvalidRequestError, LCIRCError
from .context import AppContext, book_choices, new_session
from .sources import answer_sources

log = logging.getLogger(__name__)

QD_MODE, PLAIN_MODE = "QD-LCIRC", "LCIRC"
NO_BOOK_MESSAGE = "Upload a book (or pick one from the library) before asking a question."
NO_TEXT = "(the model produced no text)"
WAITING_NOTE = "_The passages behind the answer appear when it is complete._"


# ----- API input checks ---------------------------------------------------------------------------------


def check_text(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string, got {type(value).__name__}")
    return value


def check_book_keys(keys: Any) -> Any:
    """Book keys are strings (one, or a list): a dict or a number where a key goes is refused."""
    book_keys = [keys] if isinstance(keys, str) else keys
    if book_keys is not None and not (isinstance(book_keys, list) and all(isinstance(k, str) for k in book_keys)):
        raise InvalidRequestError(f"books must be a list of book keys (strings, as /add_books returns them), got {keys!r:.120}")
    return keys


def check_choice(name: str, value: Any, choices: Sequence[str]) -> Any:
    if value not in choices:
        raise InvalidRequestError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r:.60}")
    return value


def check_number(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a float when it is a finite number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequestError(f"{name} must be a number from {low:g} to {high:g}, got {value!r:.60}")
    return float(value)


# ----- questions ----------------------------------------------------------------------------------------


def ask(
    ctx: AppContext,
    session: dict[str, Any] | None,
    question: str,
    keys: Sequence[str] | str | None,
    history: list[dict[str, Any]] | None = None,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    mode: str = QD_MODE,
) -> Iterator[tuple[list[dict[str, Any]], str, Any]]:
    """Stream (chat history, provenance markdown, provenance figure) while the answer is generated."""
    history = [dict(m) for m in (history or [])]
    earlier = _chat_turns(history)
    keys = [keys] if isinstance(keys, str) else [k for k in (keys or []) if k]
    question = (question or "").strip()
    allowed = {k for _, k in book_choices(ctx, session or new_session())}
    keys = [k for k in keys if k in allowed]
    if not question:
        yield history, "⚠️ Type a question first.", None
        return
    history.append({"role": "user", "content": question})
    if not keys:
        history.append({"role": "assistant", "content": f"⚠️ {NO_BOOK_MESSAGE}"})
        yield history, f"⚠️ {NO_BOOK_MESSAGE}", None
        return
    history.append({"role": "assistant", "content": ""})
    try:
        memories = [ctx.library.memory(key) for key in keys]
        qd = mode == QD_MODE and ctx.query_dependent
        prepared = ctx.model.prepare_answer(
            question, memories, history=earlier, max_new_tokens=int(max_new_tokens), query_dependent=qd
        )
    except Exception as err:  # LCIRCError is the user's; anything else must not end the session either
        if not isinstance(err, LCIRCError):
            log.exception("could not prepare an answer")
        history[-1]["content"] = f"⚠️ {err}"
        yield history, f"⚠️ {err}", None
        return
    markdown, figure = WAITING_NOTE, None
    yield history, markdown, figure
    kwargs: dict[str, Any] = {}
    if temperature and float(temperature) > 0:
        kwargs.update(do_sample=True, temperature=float(temperature))
    stream = ctx.model.stream_text(prepared, max_new_tokens=int(max_new_tokens), **kwargs)
    try:
        for piece in stream:
            history[-1]["content"] += piece
            yield history, markdown, figure
        _found, markdown, figure = answer_sources(ctx, keys, prepared, history[-1]["content"])
        yield history, markdown, figure
    except Exception as err:  # shown in the chat; the server goes on
        if not isinstance(err, LCIRCError):
            log.exception("generation failed")
        history[-1]["content"] += f"\n\n⚠️ {err}"
        yield history, markdown, figure
    finally:
        stream.close()  # the user pressed stop (this generator was closed) or generation ended: free the worker
    if not history[-1]["content"].strip():
        history[-1]["content"] = NO_TEXT
        yield history, markdown, figure


def _chat_turns(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Earlier (question, answer) pairs of the chat as plain text turns; warnings and failed turns are left out."""
    turns = []
    for user, assistant in zip(history[::2], history[1::2]):
        if user.get("role") != "user" or assistant.get("role") != "assistant":
            continue
        question, answer = _message_text(user.get("content")), _message_text(assistant.get("content"))
        if question.strip() and answer.strip() and "⚠️" not in answer and answer != NO_TEXT:
            turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return turns


def _message_text(content: Any) -> str:
    """A chat message's text: Gradio sends a string or a list of parts like ``{"type": "text", "text": ...}``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
