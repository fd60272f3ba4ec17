"""Fixtures for the LlamaIndex integration tests: ``make_llm``, ``llm_events``, ``clean_settings``, ``one_torch_thread``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import llama_index.core.instrumentation as instrument
import pytest
import torch
from llama_index.core import Settings
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent

# Smaller than the shared TINY config's 32-token segments: fewer recurrence steps, same code paths.
FAST = {"segment_len": 64, "max_segment_len": 64}


@pytest.fixture
def make_llm(make_lcirc) -> Callable[..., Any]:
    """Factory: an ``LCIRCLLM`` over a tiny random backbone (window 256 tokens) with the SmolLM2 tokenizer."""
    from lcirc_plugins.llama_index import LCIRCLLM

    def make(family: str = "llama", *, max_new_tokens: int = 8, seed: int = 0, **config: Any) -> LCIRCLLM:
        return LCIRCLLM(model=make_lcirc(family, seed=seed, **{**FAST, **config}), max_new_tokens=max_new_tokens)

    return make


class EventRecorder(BaseEventHandler):
    """Records LlamaIndex instrumentation events (what the query engines really sent to the LLM)."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, name: str) -> list[Any]:
        return [e for e in self.events if type(e).__name__ == name]


@pytest.fixture
def llm_events() -> Iterator[EventRecorder]:
    dispatcher = instrument.get_dispatcher()
    recorder = EventRecorder()
    dispatcher.add_event_handler(recorder)
    yield recorder
    dispatcher.event_handlers.remove(recorder)


@pytest.fixture
def clean_settings() -> Iterator[Any]:
    """LlamaIndex's global Settings, restored after the test."""
    saved = (Settings._llm, Settings._embed_model)
    yield Settings
    Settings._llm, Settings._embed_model = saved


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the spinning OpenMP
    threads made a 23-step compression take 4 s instead of 0.04 s; restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
