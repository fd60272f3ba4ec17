"""Async over blocking torch work: run a synchronous iterator in worker threads, one step at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def _next(iterator: Iterator[T]) -> object:
    return next(iterator, _DONE)


async def iterate_in_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Yield the items of a blocking ``iterator`` without blocking the event loop.

    Every ``next`` runs in a worker thread (``asyncio.to_thread`` copies the caller's context, so
    ContextVars such as LangChain's callback context are seen). If the consumer stops early, the iterator
    is closed in a thread too, which lets a generation worker stop.
    """
    try:
        while True:
            item = await asyncio.to_thread(_next, iterator)
            if item is _DONE:
                return
            yield item  # type: ignore[misc]
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            await asyncio.shield(asyncio.to_thread(close))
