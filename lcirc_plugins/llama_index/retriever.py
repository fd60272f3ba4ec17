"""``CompressedMemoryRetriever``: the source passages of compressed documents most relevant to a query."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode

from ..errors import ConfigError, EmptyInputError
from ..model.passages import Passage, best_first, bm25_scores

if TYPE_CHECKING:  # the index imports this module, not the other way round
    from .memory_index import CompressedMemoryIndex

# Provenance keys set on every passage node. Hidden from the LLM prompt and from embeddings: they are for
# the user and for LCIRCLLM (which finds the memory through them), not content.
PROVENANCE_KEYS = ("doc_id", "memory_id", "memory_file", "segment", "start", "end")


class CompressedMemoryRetriever(BaseRetriever):
    """One ``NodeWithScore`` per memory segment, best first: its text, character span and memory.

    Scores are Okapi BM25, the ranking of :func:`lcirc_plugins.model.passages.rank_passages`, computed over the
    passages of *all* the index's documents at once so that scores compare across documents (for a
    one-document index the result is exactly ``rank_passages``). Why BM25 and not the QD compressor's
    attention: it needs no trained adapter (none is shipped yet, and an untrained compressor's attention
    is noise), costs milliseconds on a CPU, and finds the passage that states a fact by the words the
    question uses; the slow test measures it on inserted facts in a 32K-token book. Every passage stays
    its own node (never merged), carrying the source document's metadata plus ``doc_id``, ``memory_id``,
    ``memory_file``, ``segment``, ``start`` and ``end`` (also in ``start_char_idx``/``end_char_idx``),
    with the document as its ``SOURCE`` relationship.

    Setup:
        .. code-block:: bash

            pip install "lcirc-plugins[llama-index]"

    Instantiate:
        .. code-block:: python

            from lcirc_plugins.llama_index import CompressedMemoryRetriever

            retriever = index.as_retriever(similarity_top_k=3)   # or CompressedMemoryRetriever(index, 3)

    Invoke:
        .. code-block:: python

            for hit in retriever.retrieve("Where is the treasure buried?"):
                meta = hit.node.metadata
                print(f"{hit.score:.2f}", meta["doc_id"], meta["start"], meta["end"], hit.node.text[:80])

    Async:
        .. code-block:: python

            hits = await retriever.aretrieve("Where is the treasure buried?")
    """

    def __init__(
        self,
        index: CompressedMemoryIndex,
        similarity_top_k: int = 3,
        *,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(similarity_top_k, int) or similarity_top_k < 1:
            raise ConfigError(f"similarity_top_k must be a positive integer, got {similarity_top_k!r}")
        self._index = index
        self._top_k = similarity_top_k
        super().__init__(callback_manager=callback_manager, verbose=verbose, **kwargs)

    @property
    def index(self) -> CompressedMemoryIndex:
        return self._index

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = query_bundle.query_str
        if not query or not query.strip():
            raise EmptyInputError("the query is empty")
        memory_ids = self._index.memory_ids
        if not memory_ids:
            raise EmptyInputError("the index holds no documents")
        candidates = [(memory_id, passage) for memory_id in memory_ids for passage in self._index.passages(memory_id)]
        scores = bm25_scores(query, [passage.text for _, passage in candidates])
        order = best_first(scores, self._top_k)
        return [NodeWithScore(node=self._passage_node(*candidates[i]), score=scores[i]) for i in order]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def _passage_node(self, memory_id: str, passage: Passage) -> TextNode:
        source = self._index.source_node(memory_id)
        doc_id = source.ref_doc_id or memory_id
        provenance = {
            "doc_id": doc_id,
            "memory_id": memory_id,
            "memory_file": self._index.memory_file(memory_id),
            "segment": passage.segment,
            "start": passage.start,
            "end": passage.end,
        }
        hidden = list(PROVENANCE_KEYS)
        related = source.source_node or RelatedNodeInfo(node_id=doc_id)
        return TextNode(
            id_=f"{memory_id}/segment-{passage.segment}",
            text=passage.text,
            metadata={**source.metadata, **provenance},
            excluded_llm_metadata_keys=[*source.excluded_llm_metadata_keys, *hidden],
            excluded_embed_metadata_keys=[*source.excluded_embed_metadata_keys, *hidden],
            start_char_idx=passage.start,
            end_char_idx=passage.end,
            relationships={NodeRelationship.SOURCE: related},
        )
