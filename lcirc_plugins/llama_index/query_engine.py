"""``CompressedMemoryQueryEngine``: QD-LCIRC answers from whole-document memories, passages as sources."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import RESPONSE_TYPE, AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle

from ..model.memory import CompressedMemory
from ..model.provenance import Provenance
from .llm import LCIRCLLM

if TYPE_CHECKING:  # the index imports this module, not the other way round
    from .memory_index import CompressedMemoryIndex


class CompressedMemoryQueryEngine(BaseQueryEngine):
    """Retrieve passages, then answer with the memories of the documents they come from.

    The decoder's prompt is the question only (the backbone's chat template); the documents reach it
    through their memories, recompressed for the question in QD mode. The retrieved passages are returned
    as ``source_nodes`` (each its own node, with its score and provenance), so users can check the answer.
    ``response.metadata`` names the memories read (``memory_ids``) and how many tokens they hold and, for a
    complete (not streamed) answer, ``provenance``: the passages the answer read most (``LCIRCModel.provenance``,
    the same call as the app's and LangChain's), each a dict with ``memory_id``, ``segment``, ``start``, ``end``,
    ``text``, ``score`` and ``method`` ("attention", or "bm25" when the adapter's gates are closed).

    Setup:
        .. code-block:: bash

            pip install "lcirc-plugins[llama-index]"

    Instantiate:
        .. code-block:: python

            engine = index.as_query_engine()                  # the index's LCIRCLLM
            engine = index.as_query_engine(streaming=True, similarity_top_k=5)

    Invoke:
        .. code-block:: python

            response = engine.query("Who buried the treasure?")
            print(response.response, [n.node.metadata["start"] for n in response.source_nodes])
            response = await engine.aquery("Who buried the treasure?")

    Stream:
        .. code-block:: python

            for piece in index.as_query_engine(streaming=True).query("Who buried the treasure?").response_gen:
                print(piece, end="")
    """

    def __init__(
        self,
        index: CompressedMemoryIndex,
        retriever: BaseRetriever,
        llm: LCIRCLLM,
        *,
        streaming: bool = False,
        callback_manager: CallbackManager | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._index = index
        self._retriever = retriever
        self._llm = llm
        self._streaming = streaming
        self._generate_kwargs = dict(generate_kwargs or {})
        super().__init__(callback_manager=callback_manager)

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._retriever.retrieve(query_bundle)

    def _memories(self, nodes: list[NodeWithScore]) -> tuple[list[CompressedMemory], dict[str, Any]]:
        """The memories of the documents owning the passages, in the order of their best passage."""
        memory_ids = list(dict.fromkeys(n.node.metadata["memory_id"] for n in nodes))
        memories = [self._index.memory(memory_id) for memory_id in memory_ids]
        return memories, {"memory_ids": memory_ids, "memory_tokens": sum(m.num_tokens for m in memories)}

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        nodes = self._retriever.retrieve(query_bundle)
        memories, metadata = self._memories(nodes)
        question = query_bundle.query_str
        if self._streaming:
            pieces = self._llm.stream_answer(question, memories, **self._generate_kwargs)
            return StreamingResponse(response_gen=pieces, source_nodes=nodes, metadata=metadata)
        text, found = self._llm.answer_with_provenance(question, memories, **self._generate_kwargs)
        return Response(text, source_nodes=nodes, metadata={**metadata, "provenance": _records(found, metadata["memory_ids"])})

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        nodes = await self._retriever.aretrieve(query_bundle)
        memories, metadata = self._memories(nodes)
        question = query_bundle.query_str
        if self._streaming:
            pieces = self._llm.astream_answer(question, memories, **self._generate_kwargs)
            return AsyncStreamingResponse(response_gen=pieces, source_nodes=nodes, metadata=metadata)
        text, found = await asyncio.to_thread(self._llm.answer_with_provenance, question, memories, **self._generate_kwargs)
        return Response(text, source_nodes=nodes, metadata={**metadata, "provenance": _records(found, metadata["memory_ids"])})


def _records(found: Provenance, memory_ids: list[str]) -> list[dict[str, Any]]:
    return [
        {"memory_id": memory_ids[p.source], "segment": p.segment, "start": p.start, "end": p.end, "text": p.text, "score": p.score, "method": found.method}
        for p in found.passages
    ]
