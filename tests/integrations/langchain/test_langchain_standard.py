"""LangChain's own standard test suites (langchain-tests) on ChatLCIRC and LCIRCMemoryRetriever.

Nothing is mocked: the suites drive the real classes on a tiny random LCIRC model. Features the model does
not have (tool calling, structured output, JSON mode, images/audio/PDF, model override) are skipped by the
suites themselves from the capability properties left at their defaults; nothing here is xfailed.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from lcirc_plugins import CompressedMemory, LCIRCModel
from lcirc_plugins.langchain import ChatLCIRC, LCIRCMemoryRetriever


class _TinyModel:
    """Hands the session's tiny model to the suites, which build the class from properties."""

    lcirc: LCIRCModel

    @pytest.fixture(autouse=True)
    def _tiny_lcirc(self, request: pytest.FixtureRequest, lc_model: LCIRCModel) -> None:
        request.instance.lcirc = lc_model


class TestChatLCIRCUnit(_TinyModel, ChatModelUnitTests):
    # The suite's standard parameters include an api_key, which a local model does not have: it is moved to
    # model_kwargs with a warning (the partner-package behaviour), expected here.
    pytestmark = pytest.mark.filterwarnings("ignore:api_key is not a field of ChatLCIRC:UserWarning")

    @property
    def chat_model_class(self) -> type[ChatLCIRC]:
        return ChatLCIRC

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": self.lcirc}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # temperature, max_tokens, timeout, stop, max_retries (and api_key); fewer new tokens for speed.
        return {**super().standard_chat_model_params, "max_tokens": 4}


class TestChatLCIRCIntegration(_TinyModel, ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatLCIRC]:
        return ChatLCIRC

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": self.lcirc, "max_tokens": 4}


class TestLCIRCMemoryRetrieverStandard(RetrieversIntegrationTests):
    memory: CompressedMemory
    lcirc: LCIRCModel

    @pytest.fixture(autouse=True)
    def _tiny_memory(self, request: pytest.FixtureRequest, lc_model: LCIRCModel, book_memory: CompressedMemory) -> None:
        request.instance.lcirc, request.instance.memory = lc_model, book_memory

    @property
    def retriever_constructor(self) -> type[LCIRCMemoryRetriever]:
        return LCIRCMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"model": self.lcirc, "memories": [self.memory]}

    @property
    def retriever_query_example(self) -> str:
        return "Who called roughly for a glass of rum?"
