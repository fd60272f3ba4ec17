"""``CompressedMemoryIndex``: documents compressed once into QD-LCIRC memories, persisted as safetensors.

Each document becomes one memory (``CompressedMemory``), reused for every later question. The docstore keeps
one node per document (its text and metadata, linked to the document as its source), as for any LlamaIndex
index; the memories live in a :class:`CompressedMemoryStore` held by the storage context and are written to
``<persist_dir>/lcirc_memories/*.safetensors`` (never pickle) when the storage context is persisted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.indices.base import BaseIndex
from llama_index.core.llms import LLM
from llama_index.core.schema import BaseNode, Document, MetadataMode, NodeRelationship, TextNode, TransformComponent
from llama_index.core.settings import Settings
from llama_index.core.storage.docstore.types import RefDocInfo
from llama_index.core.storage.storage_context import StorageContext

from ..errors import ConfigError, CorruptFileError, EmptyInputError
from ..model.memory import CompressedMemory
from ..model.passages import Passage, passages
from .llm import LCIRCLLM
from .query_engine import CompressedMemoryQueryEngine
from .retriever import CompressedMemoryRetriever
from .storage import INDEX_STRUCT_TYPE, MEMORY_FOLDER, CompressedMemoryStorageContext, IndexCompressedMemory, memory_file_name

_COMPRESS_BATCH = 8  # documents per batched recurrence: bounds the [B, L, d] segment tensors


class DocumentToMemoryNode(TransformComponent):
    """One node per document, whole: the compressor does its own segmentation, so nothing is split.

    The node keeps the document's text, metadata and metadata exclusions, and points to the document as its
    source (so ``delete_ref_doc``/``refresh_ref_docs`` work); nodes that are not documents pass through.
    """

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        out: list[BaseNode] = []
        for node in nodes:
            if not isinstance(node, Document):
                out.append(node)
                continue
            out.append(
                TextNode(
                    id_=f"{node.id_}#memory",
                    text=node.get_content(metadata_mode=MetadataMode.NONE),
                    metadata=dict(node.metadata),
                    excluded_embed_metadata_keys=list(node.excluded_embed_metadata_keys),
                    excluded_llm_metadata_keys=list(node.excluded_llm_metadata_keys),
                    relationships={NodeRelationship.SOURCE: node.as_related_node_info()},
                )
            )
        return out


def resolve_lcirc_llm(llm: LLM | None) -> LCIRCLLM:
    """The LCIRCLLM that compresses for an index: ``llm``, else ``Settings.llm`` if it is one."""
    # Settings._llm, not Settings.llm: the property would try to build LlamaIndex's default (OpenAI) LLM.
    candidate = llm if llm is not None else Settings._llm
    if not isinstance(candidate, LCIRCLLM):
        got = "nothing" if candidate is None else type(candidate).__name__
        raise ConfigError(
            f"a CompressedMemoryIndex compresses with an LCIRCLLM, got {got}: pass llm=LCIRCLLM(...) or set Settings.llm"
        )
    return candidate


class CompressedMemoryIndex(BaseIndex[IndexCompressedMemory]):
    """Documents compressed once into QD-LCIRC memories; questions are answered from the memories.

    Setup:
        .. code-block:: bash

            pip install "lcirc-plugins[llama-index]"

    Instantiate:
        .. code-block:: python

            from llama_index.core import Document, SimpleDirectoryReader
            from lcirc_plugins.llama_index import CompressedMemoryIndex, LCIRCLLM

            llm = LCIRCLLM(adapter="default")
            documents = SimpleDirectoryReader("books/").load_data()   # or [Document(text=..., metadata=...)]
            index = CompressedMemoryIndex.from_documents(documents, llm=llm)

    Persist and load (the usual LlamaIndex calls; memories go to ``storage/lcirc_memories/``):
        .. code-block:: python

            from llama_index.core import StorageContext, load_index_from_storage

            index.storage_context.persist(persist_dir="storage")
            index = load_index_from_storage(StorageContext.from_defaults(persist_dir="storage"), llm=llm)
            index = CompressedMemoryIndex.from_persist_dir("storage", llm=llm)   # the same, shorter

    Invoke:
        .. code-block:: python

            response = index.as_query_engine().query("Who buried the treasure?")
            print(response.response)
            for source in response.source_nodes:   # passages, best first, with their BM25 scores
                print(source.score, source.node.metadata["start"], source.node.metadata["end"])
            nodes = index.as_retriever(similarity_top_k=5).retrieve("the black spot")

    Stream:
        .. code-block:: python

            streaming = index.as_query_engine(streaming=True).query("Who buried the treasure?")
            for piece in streaming.response_gen:
                print(piece, end="")

    How a multi-document index answers: the retriever ranks the passages of all documents together; the
    answer reads the memories of the documents that own the retrieved passages, best document first,
    concatenated along the vector axis (see :meth:`LCIRCLLM.prepare_answer`). With another LLM than an
    ``LCIRCLLM``, ``as_query_engine`` builds LlamaIndex's usual engine, which reads the passages' text.
    """

    index_struct_cls = IndexCompressedMemory

    def __init__(
        self,
        nodes: Sequence[BaseNode] | None = None,
        *,
        llm: LLM | None = None,
        index_struct: IndexCompressedMemory | None = None,
        storage_context: StorageContext | None = None,
        persist_dir: str | Path | None = None,
        callback_manager: CallbackManager | None = None,
        transformations: list[TransformComponent] | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> None:
        if index_struct is None and not nodes:
            raise EmptyInputError("there are no documents to index")
        self._llm = resolve_lcirc_llm(llm)
        storage = CompressedMemoryStorageContext.wrap(storage_context, persist_dir)
        self._memory_store = storage.memory_store
        self._passages: dict[str, list[Passage]] = {}
        self._sources: dict[str, BaseNode] = {}
        super().__init__(
            nodes=nodes,
            index_struct=index_struct,
            storage_context=storage,
            callback_manager=callback_manager,
            show_progress=show_progress,
            **kwargs,
        )
        # BaseIndex turns an empty list into Settings.transformations (a sentence splitter): keep documents whole.
        self._transformations = list(transformations) if transformations is not None else [DocumentToMemoryNode()]
        if index_struct is not None:
            self._load_memories(storage, index_struct)

    @classmethod
    def from_documents(  # type: ignore[override]
        cls,
        documents: Sequence[Document],
        storage_context: StorageContext | None = None,
        show_progress: bool = False,
        callback_manager: CallbackManager | None = None,
        transformations: list[TransformComponent] | None = None,
        *,
        llm: LLM | None = None,
        **kwargs: Any,
    ) -> CompressedMemoryIndex:
        """Compress every document (whole, keeping its id and metadata) into one memory."""
        if not documents:
            raise EmptyInputError("there are no documents to index")
        transformations = list(transformations) if transformations is not None else [DocumentToMemoryNode()]
        storage = CompressedMemoryStorageContext.wrap(storage_context)
        for document in documents:
            storage.docstore.set_document_hash(document.id_, document.hash)
        nodes: Sequence[BaseNode] = documents
        for transform in transformations:
            nodes = transform(nodes)
        return cls(
            nodes=nodes,
            llm=llm,
            storage_context=storage,
            show_progress=show_progress,
            callback_manager=callback_manager,
            transformations=transformations,
            **kwargs,
        )

    @classmethod
    def from_persist_dir(
        cls, persist_dir: str | Path, *, llm: LLM | None = None, index_id: str | None = None
    ) -> CompressedMemoryIndex:
        """Load an index persisted with ``index.storage_context.persist(persist_dir)``."""
        storage = CompressedMemoryStorageContext.from_defaults(persist_dir=str(persist_dir))
        structs = [s for s in storage.index_store.index_structs() if isinstance(s, IndexCompressedMemory)]
        if index_id is not None:
            structs = [s for s in structs if s.index_id == index_id]
        if not structs:
            wanted = "a compressed-memory index" if index_id is None else f"a compressed-memory index with id {index_id!r}"
            raise CorruptFileError(
                f"{persist_dir} holds no {wanted}; persist one with index.storage_context.persist(persist_dir)"
            )
        if len(structs) > 1:
            raise CorruptFileError(f"{persist_dir} holds {len(structs)} compressed-memory indexes; pass index_id= to choose one")
        return cls(index_struct=structs[0], storage_context=storage, llm=llm)

    # ----- building and loading ----------------------------------------------------------------------------

    def _build_index_from_nodes(self, nodes: Sequence[BaseNode], **build_kwargs: Any) -> IndexCompressedMemory:
        struct = IndexCompressedMemory()
        self._compress_into(struct, nodes)
        return struct

    def _insert(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        self._compress_into(self._index_struct, nodes)

    def _compress_into(self, struct: IndexCompressedMemory, nodes: Sequence[BaseNode]) -> None:
        texts = []
        for node in nodes:
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            if not text.strip():
                raise EmptyInputError(f"document {node.ref_doc_id or node.node_id!r} has no text to compress")
            texts.append(text)
        model = self._llm.model
        for start in range(0, len(nodes), _COMPRESS_BATCH):
            batch = list(nodes[start : start + _COMPRESS_BATCH])
            notes = [{"node_id": n.node_id, "doc_id": n.ref_doc_id or n.node_id, **_json_safe(n.metadata)} for n in batch]
            memories = model.compress_many(texts[start : start + len(batch)], progress=self._show_progress, metadata=notes)
            for node, memory in zip(batch, memories):
                self._memory_store.add(node.node_id, memory)
                struct.memory_files[node.node_id] = memory_file_name(node.node_id)
                self._forget(node.node_id)

    def _load_memories(self, storage: CompressedMemoryStorageContext, struct: IndexCompressedMemory) -> None:
        """Read the memory files the index store names, and refuse memories another adapter made."""
        model = self._llm.model
        for memory_id, file_name in struct.memory_files.items():
            if memory_id not in self._memory_store:
                directory = storage.memory_dir or struct.persist_dir
                if directory is None:
                    raise CorruptFileError(
                        "this index's memories were never persisted: persist with index.storage_context.persist(persist_dir)"
                    )
                path = Path(directory) / MEMORY_FOLDER / file_name
                if not path.is_file():
                    raise CorruptFileError(
                        f"memory file {path} is missing; if the storage folder was moved, load it with "
                        "load_index_from_storage(..., persist_dir=<that folder>) or CompressedMemoryIndex.from_persist_dir(<that folder>)"
                    )
                self._memory_store.add(memory_id, CompressedMemory.load(path))
            self._memory_store.get(memory_id).check_compatible(model.adapter_fingerprint, model.signature)

    def _delete_node(self, node_id: str, **delete_kwargs: Any) -> None:
        self._index_struct.memory_files.pop(node_id, None)
        self._memory_store.delete(node_id)
        self._forget(node_id)

    def _forget(self, memory_id: str) -> None:
        self._passages.pop(memory_id, None)
        self._sources.pop(memory_id, None)

    # ----- what retrievers and query engines read -------------------------------------------------------------

    @property
    def llm(self) -> LCIRCLLM:
        return self._llm

    @property
    def memory_ids(self) -> list[str]:
        """Ids of the nodes that have a memory (one per document), in insertion order."""
        return list(self._index_struct.memory_files)

    def memory(self, memory_id: str) -> CompressedMemory:
        return self._memory_store.get(memory_id)

    def memory_file(self, memory_id: str) -> str:
        """The memory's file, relative to the storage folder (where ``persist`` writes or wrote it)."""
        return f"{MEMORY_FOLDER}/{self._index_struct.memory_files[memory_id]}"

    def passages(self, memory_id: str) -> list[Passage]:
        """Every segment of a memory as a passage (decoded once, then cached)."""
        if memory_id not in self._passages:
            self._passages[memory_id] = passages(self.memory(memory_id), self._llm.model.tokenizer)
        return self._passages[memory_id]

    def source_node(self, memory_id: str) -> BaseNode:
        """The docstore node a memory was made from (its metadata is copied onto every passage)."""
        if memory_id not in self._sources:
            self._sources[memory_id] = self.docstore.get_node(memory_id)
        return self._sources[memory_id]

    @property
    def ref_doc_info(self) -> dict[str, RefDocInfo]:
        info: dict[str, RefDocInfo] = {}
        for node in self.docstore.get_nodes(self.memory_ids):
            if node.ref_doc_id is not None:
                found = self.docstore.get_ref_doc_info(node.ref_doc_id)
                if found is not None:
                    info[node.ref_doc_id] = found
        return info

    def as_retriever(self, similarity_top_k: int = 3, **kwargs: Any) -> BaseRetriever:
        return CompressedMemoryRetriever(
            self, similarity_top_k=similarity_top_k, callback_manager=self._callback_manager, **kwargs
        )

    def as_query_engine(
        self,
        llm: LLM | None = None,
        *,
        streaming: bool = False,
        similarity_top_k: int = 3,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> BaseQueryEngine:
        """QD-LCIRC over the memories with an ``LCIRCLLM`` (the index's own by default); any other LLM reads passages.

        ``generate_kwargs`` (e.g. ``max_new_tokens``) go to generation. Other keyword arguments configure
        LlamaIndex's passage-reading engine (``response_mode``, ``text_qa_template``, ...), used with another LLM.
        """
        from llama_index.core.query_engine import RetrieverQueryEngine

        retriever = self.as_retriever(similarity_top_k=similarity_top_k)
        chosen = llm if llm is not None else self._llm
        if isinstance(chosen, LCIRCLLM):
            if kwargs:
                raise ConfigError(
                    f"{sorted(kwargs)} configure LlamaIndex's passage-reading engine, not QD-LCIRC answers from memory; "
                    "pass llm=<another LLM> to use that engine, or generate_kwargs={...} for generation options"
                )
            return CompressedMemoryQueryEngine(
                self,
                retriever,
                chosen,
                streaming=streaming,
                callback_manager=self._callback_manager,
                generate_kwargs=generate_kwargs,
            )
        return RetrieverQueryEngine.from_args(retriever, llm=chosen, streaming=streaming, **kwargs)


def _json_safe(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar metadata values, which a memory file's JSON header can carry."""
    return {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool)) or v is None}


def _register_index_type() -> None:
    """Let ``load_index_from_storage`` rebuild this index.

    LlamaIndex finds index and struct classes through two module-level dicts keyed by the struct type
    (``IndexStructType`` is a ``str`` enum, so a plain string key works); they have no registration API in
    llama-index-core 0.14. Adding one new key is the least intrusive way; it changes no existing entry.
    """
    from llama_index.core.data_structs.registry import INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS
    from llama_index.core.indices.registry import INDEX_STRUCT_TYPE_TO_INDEX_CLASS

    INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS.setdefault(INDEX_STRUCT_TYPE, IndexCompressedMemory)  # type: ignore[call-overload]
    INDEX_STRUCT_TYPE_TO_INDEX_CLASS.setdefault(INDEX_STRUCT_TYPE, CompressedMemoryIndex)  # type: ignore[call-overload]


_register_index_type()
