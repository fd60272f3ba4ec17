"""LlamaIndex integration: ``LCIRCLLM`` for any query engine, and a compressed-memory index and retriever.

Needs the ``llama-index`` extra: ``pip install "lcirc-plugins[llama-index]"``.
"""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    import llama_index.core  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        'the LlamaIndex integration needs llama-index-core: pip install "lcirc-plugins[llama-index]"'
    ) from err

from ..model.loading import UntrainedAdapterWarning
from ..model.loading import load_model as load_lcirc_model
from .llm import EFFECTIVE_CONTEXT_WINDOW, LCIRCLLM
from .memory_index import CompressedMemoryIndex, DocumentToMemoryNode
from .query_engine import CompressedMemoryQueryEngine
from .retriever import PROVENANCE_KEYS, CompressedMemoryRetriever
from .storage import MEMORY_FOLDER, CompressedMemoryStorageContext, CompressedMemoryStore, IndexCompressedMemory

__all__ = [
    "EFFECTIVE_CONTEXT_WINDOW",
    "LCIRCLLM",
    "MEMORY_FOLDER",
    "PROVENANCE_KEYS",
    "CompressedMemoryIndex",
    "CompressedMemoryQueryEngine",
    "CompressedMemoryRetriever",
    "CompressedMemoryStorageContext",
    "CompressedMemoryStore",
    "DocumentToMemoryNode",
    "IndexCompressedMemory",
    "UntrainedAdapterWarning",
    "load_lcirc_model",
]
