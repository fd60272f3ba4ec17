"""Streaming generation that stops when its consumer goes away: the one home of threaded streaming.

``generate`` runs in a worker thread (started in a copy of the caller's context: the memory reaches the decoder
hooks through a ``ContextVar``) and hands text pieces to the consumer through a ``TextIteratorStreamer``.
Closing the stream, breaking out of a ``for`` loop over it (the generator is closed when it is dropped), or
:meth:`GenerationStream.cancel` stops generation within one token, so an abandoned stream never keeps the
backbone busy. :func:`iterate_in_thread` is the async bridge both framework integrations use.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

T = TypeVar("T")
_DONE = object()


class _Cancelled(StoppingCriteria):
    """Ends ``generate`` at the next token once the event is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class GenerationStream(Iterator[str]):
    """Text pieces of one generation; once it is exhausted, ``new_tokens`` and ``finish_reason`` say what was made.

    ``generate`` is a callable taking ``max_new_tokens=``, ``streamer=`` and ``stopping_criteria=``
    (``LCIRCModel.generate`` with its inputs bound) and returning the id sequence [1, prompt + new];
    ``prompt_tokens`` is the prompt's length in it. ``finish_reason`` is ``"length"`` when ``max_new_tokens``
    were generated, ``"cancelled"`` when the consumer stopped it before that, else ``"stop"``.

    Neither the worker nor the piece generator refers back to the stream, so dropping the stream (a ``break``
    out of a loop over it) frees it at once and its finaliser stops the worker.
    """

    def __init__(
        self, generate: Callable[..., torch.Tensor], tokenizer: Any, prompt_tokens: int, max_new_tokens: int, /, **kwargs: Any
    ) -> None:
        # Positional-only: ``kwargs`` go to ``generate`` and may hold a ``tokenizer`` of their own (stop strings).
        self.cancelled = cancelled = threading.Event()
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        criteria = StoppingCriteriaList([*(kwargs.pop("stopping_criteria", None) or []), _Cancelled(cancelled)])
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["ids"] = generate(max_new_tokens=max_new_tokens, streamer=streamer, stopping_criteria=criteria, **kwargs)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread
                outcome["error"] = err
                streamer.end()

        worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
        self._outcome, self._prompt_tokens, self._max_new_tokens = outcome, prompt_tokens, max_new_tokens
        self._pieces = _pieces(worker, streamer, cancelled, outcome)

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        """Stop generating at the next token (pieces already queued are still yielded)."""
        self.cancelled.set()

    def close(self) -> None:
        """Stop generating and wait for the worker to finish its token; idempotent."""
        self.cancel()
        self._pieces.close()

    def __del__(self) -> None:
        if hasattr(self, "_pieces"):  # not when __init__ failed
            self.close()

    @property
    def new_tokens(self) -> torch.Tensor | None:
        ids = self._outcome.get("ids")
        return None if ids is None else ids[0, self._prompt_tokens :]

    @property
    def finish_reason(self) -> str | None:
        new = self.new_tokens
        if new is None:
            return "cancelled" if self.cancelled.is_set() else None
        if len(new) >= self._max_new_tokens:
            return "length"
        return "cancelled" if self.cancelled.is_set() else "stop"


def _pieces(
    worker: threading.Thread, streamer: TextIteratorStreamer, cancelled: threading.Event, outcome: dict[str, Any]
) -> Iterator[str]:
    worker.start()
    finished = False
    try:
        yield from (piece for piece in streamer if piece)
        finished = True
    finally:
        if not finished:  # the consumer stopped early: it must not leave the worker generating
            cancelled.set()
        worker.join()
    if "error" in outcome:
        raise outcome["error"]


async def iterate_in_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Yield the items of a blocking ``iterator`` without blocking the event loop.

    Every ``next`` runs in a worker thread (``asyncio.to_thread`` copies the caller's context, so ContextVars
    such as LangChain's callback context are seen). If the consumer stops early, the iterator is closed in a
    thread too, which stops a generation worker.
    """
    try:
        while True:
            item = await asyncio.to_thread(next, iterator, _DONE)
            if item is _DONE:
                return
            yield item  # type: ignore[misc]
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            await asyncio.shield(asyncio.to_thread(close))
