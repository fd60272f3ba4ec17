"""Where a ``CompressedMemoryIndex`` keeps its memories: one safetensors file per document, beside LlamaIndex's JSON.

``CompressedMemoryStore`` holds the memories by node id, ``CompressedMemoryStorageContext`` is a
``StorageContext`` that also writes them in ``persist``, and ``IndexCompressedMemory`` is the index's entry in the
index store (which nodes have a memory and their file names). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from llama_index.core.data_structs.data_structs import IndexStruct
from llama_index.core.storage.storage_context import DEFAULT_PERSIST_DIR, StorageContext

from ..errors import ConfigError, LCIRCError
from ..model.memory import CompressedMemory

MEMORY_FOLDER = "lcirc_memories"
INDEX_STRUCT_TYPE = "lcirc_compressed_memory"


def memory_file_name(memory_id: str) -> str:
    """A stable, filesystem-safe file name for a memory: readable prefix + hash of the full id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", memory_id)[:48].strip("._") or "memory"
    return f"{slug}-{hashlib.sha256(memory_id.encode()).hexdigest()[:12]}.safetensors"


@dataclass
class IndexCompressedMemory(IndexStruct):
    """The index's entry in the index store: which nodes have a memory, and their file names.

    ``persist_dir`` is where the memories were last written; ``load_index_from_storage`` uses it when the
    caller gives a plain ``StorageContext`` and no ``persist_dir=`` (the folder was not moved).
    """

    memory_files: dict[str, str] = field(default_factory=dict)
    persist_dir: str | None = None

    @classmethod
    def get_type(cls) -> str:  # type: ignore[override]  # a new type, not one of IndexStructType's
        return INDEX_STRUCT_TYPE


class CompressedMemoryStore:
    """Memories by node id, shared by the indexes of one storage context; one safetensors file each."""

    def __init__(self, memories: Mapping[str, CompressedMemory] | None = None) -> None:
        self._memories: dict[str, CompressedMemory] = dict(memories or {})

    def add(self, memory_id: str, memory: CompressedMemory) -> None:
        self._memories[memory_id] = memory

    def get(self, memory_id: str) -> CompressedMemory:
        try:
            return self._memories[memory_id]
        except KeyError:
            raise LCIRCError(f"no memory {memory_id!r} in this index") from None

    def delete(self, memory_id: str) -> None:
        self._memories.pop(memory_id, None)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._memories

    def __len__(self) -> int:
        return len(self._memories)

    def __iter__(self) -> Iterator[str]:
        return iter(self._memories)

    def persist(self, persist_dir: str | Path) -> Path:
        """Write every memory to ``<persist_dir>/lcirc_memories/`` and drop files of deleted memories."""
        folder = Path(persist_dir) / MEMORY_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        keep = set()
        for memory_id, memory in self._memories.items():
            name = memory_file_name(memory_id)
            memory.save(folder / name)  # atomic: written to a temporary name, then renamed
            keep.add(name)
        for stale in folder.glob("*.safetensors"):
            if stale.name not in keep:
                stale.unlink()
        return folder


@dataclass
class CompressedMemoryStorageContext(StorageContext):
    """A ``StorageContext`` that also holds the memories and writes them in :meth:`persist`.

    ``CompressedMemoryIndex`` wraps whatever storage context it is given in one of these (sharing its
    docstore, index store and vector stores), so ``index.storage_context.persist(persist_dir)`` writes the
    memories next to the usual JSON files.
    """

    memory_store: CompressedMemoryStore = field(default_factory=CompressedMemoryStore)
    memory_dir: str | None = None

    @classmethod
    def from_defaults(cls, *, persist_dir: str | None = None, **kwargs: Any) -> CompressedMemoryStorageContext:  # type: ignore[override]
        """``StorageContext.from_defaults``, remembering ``persist_dir`` as the folder to read memories from."""
        return cls.wrap(StorageContext.from_defaults(persist_dir=persist_dir, **kwargs), persist_dir)

    @classmethod
    def wrap(cls, context: StorageContext | None, memory_dir: str | Path | None = None) -> CompressedMemoryStorageContext:
        if context is None:
            context = StorageContext.from_defaults()
        directory = None if memory_dir is None else str(Path(memory_dir).resolve())
        if isinstance(context, cls):
            context.memory_dir = directory or context.memory_dir
            return context
        return cls(
            docstore=context.docstore,
            index_store=context.index_store,
            vector_stores=context.vector_stores,
            graph_store=context.graph_store,
            property_graph_store=context.property_graph_store,
            memory_dir=directory,
        )

    def persist(self, persist_dir: str | Path = DEFAULT_PERSIST_DIR, *args: Any, fs: Any = None, **kwargs: Any) -> None:
        """Write the memories, then the usual JSON stores (which name the memory files)."""
        if fs is not None and not isinstance(fs, LocalFileSystem):
            raise ConfigError("compressed memories are written to a local folder; persist without a remote fs=")
        directory = Path(persist_dir).resolve()
        self.memory_store.persist(directory)
        for struct in self.index_store.index_structs():
            if isinstance(struct, IndexCompressedMemory):
                struct.persist_dir = str(directory)
                self.index_store.add_index_struct(struct)
        super().persist(persist_dir, *args, fs=fs, **kwargs)
        self.memory_dir = str(directory)
