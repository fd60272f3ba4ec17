"""Streaming stops generating when its consumer goes away: the model's stream, LlamaIndex and LangChain, sync and async.

Each test slows every decoder forward a little (a forward hook that sleeps), takes two pieces, abandons the
stream and then counts the forwards that still happen: at most the one token in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from langchain_core.messages import HumanMessage
from llama_index.core.base.llms.types import ChatMessage

from lcirc_plugins.langchain import LCIRC, ChatLCIRC
from lcirc_plugins.llama_index import LCIRCLLM
from lcirc_plugins.model.lcirc_model import PreparedPrompt

MAX_NEW = 200  # far more than any test lets run (the tiny window is 256)


class ForwardCounter:
    """Counts the backbone's forward passes, each slowed by ``delay`` seconds."""

    def __init__(self, model, delay: float = 0.01) -> None:
        self.count = 0
        self.delay = delay
        self.handle = model.backbone.register_forward_hook(self._hook)

    def _hook(self, *args) -> None:
        self.count += 1
        time.sleep(self.delay)

    def after_abandoning(self, pause: float = 0.3) -> int:
        """Forwards that run after the consumer left (measured over ``pause`` seconds)."""
        before = self.count
        time.sleep(pause)
        return self.count - before


@pytest.fixture
def slow_model(make_lcirc) -> Iterator:
    model = make_lcirc("llama", gate_init=0.3)
    counter = ForwardCounter(model)
    yield model, counter
    counter.handle.remove()


def _take_two(pieces) -> None:
    for i, _ in enumerate(pieces):
        if i == 1:
            break


def test_a_closed_model_stream_stops_generating(slow_model):
    model, counter = slow_model
    stream = model.stream_text(model.prepare_prompt("Tell me a story.", max_new_tokens=MAX_NEW), max_new_tokens=MAX_NEW)
    _take_two(stream)
    stream.close()
    assert counter.after_abandoning() == 0, "close() returns once the worker has stopped"
    assert counter.count < 30 and stream.finish_reason == "cancelled"


def test_a_dropped_model_stream_stops_generating(slow_model):
    model, counter = slow_model
    _take_two(model.stream_text(model.prepare_prompt("Tell me a story.", max_new_tokens=MAX_NEW), max_new_tokens=MAX_NEW))
    assert counter.after_abandoning() <= 1, "the stream is freed when dropped, and its finaliser stops the worker"
    assert counter.count < 30


def test_a_finished_stream_reports_its_tokens_and_why_it_ended(slow_model):
    model, _ = slow_model
    prepared: PreparedPrompt = model.prepare_prompt("Tell me a story.", max_new_tokens=5)
    stream = model.stream_text(prepared, max_new_tokens=5)
    text = "".join(stream)
    assert stream.finish_reason == "length" and len(stream.new_tokens) == 5
    assert text.strip() == model.generate_text(prepared, max_new_tokens=5)[0]


SYNC_STREAMS: dict[str, Callable] = {
    "llama_index stream_complete": lambda m: LCIRCLLM(model=m, max_new_tokens=MAX_NEW).stream_complete("Tell me a story."),
    "llama_index stream_chat": lambda m: LCIRCLLM(model=m, max_new_tokens=MAX_NEW).stream_chat(
        [ChatMessage(role="user", content="Tell me a story.")]
    ),
    "langchain chat stream": lambda m: ChatLCIRC(model=m, max_new_tokens=MAX_NEW).stream([HumanMessage("Tell me a story.")]),
    "langchain llm stream": lambda m: LCIRC(model=m, max_new_tokens=MAX_NEW).stream("Tell me a story."),
}


@pytest.mark.parametrize("name", SYNC_STREAMS)
def test_an_abandoned_integration_stream_stops_generating(slow_model, name):
    model, counter = slow_model
    stream = SYNC_STREAMS[name](model)
    _take_two(stream)
    stream.close()
    assert counter.after_abandoning() <= 1
    assert counter.count < 30


async def _llama_index_astream_complete(m):
    return await LCIRCLLM(model=m, max_new_tokens=MAX_NEW).astream_complete("Tell me a story.")


async def _llama_index_astream_chat(m):
    return await LCIRCLLM(model=m, max_new_tokens=MAX_NEW).astream_chat([ChatMessage(role="user", content="Tell me a story.")])


async def _langchain_chat_astream(m):
    return ChatLCIRC(model=m, max_new_tokens=MAX_NEW).astream([HumanMessage("Tell me a story.")])


async def _langchain_llm_astream(m):
    return LCIRC(model=m, max_new_tokens=MAX_NEW).astream("Tell me a story.")


ASYNC_STREAMS = {
    "llama_index astream_complete": _llama_index_astream_complete,
    "llama_index astream_chat": _llama_index_astream_chat,
    "langchain chat astream": _langchain_chat_astream,
    "langchain llm astream": _langchain_llm_astream,
}


@pytest.mark.parametrize("name", ASYNC_STREAMS)
def test_an_abandoned_async_integration_stream_stops_generating(slow_model, name):
    model, counter = slow_model

    async def consume() -> None:
        stream = await ASYNC_STREAMS[name](model)
        taken = 0
        async for _ in stream:
            taken += 1
            if taken == 2:
                break
        await stream.aclose()

    asyncio.run(consume())
    assert counter.after_abandoning() <= 1
    assert counter.count < 30
