"""``LCIRCMemoryRetriever``: passages of compressed documents, ranked for a query, with their provenance.

Every segment of a compressed document is a passage: its text is decoded from the memory's own token ids
and its character span points into the source document. Ranking is Okapi BM25
(:mod:`lcirc_plugins.model.passages`), computed over the passages of *all* documents at once so that scores
compare across documents; for one document the ranking is exactly ``rank_passages``. The memories are
persisted as one safetensors file each plus a JSON index: no pickle anywhere.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from ..errors import ConfigError, CorruptFileError, EmptyInputError
from ..model.lcirc_model import LCIRCModel
from ..model.memory import CompressedMemory
from ..model.passages import Passage, best_first, bm25_scores, passages

INDEX_NAME = "lcirc_retriever.json"
MEMORY_FOLDER = "memories"
FORMAT_VERSION = 1
PROVENANCE_KEYS = ("memory_id", "segment", "start", "end", "score")


def passage_document(passage: Passage, memory_id: str, metadata: dict[str, Any]) -> Document:
    """A LangChain ``Document`` for one passage: its text, and the source's metadata plus provenance.

    Provenance keys (``memory_id``, ``segment``, ``start``, ``end``, ``score``) win over source metadata
    keys of the same name: ``document_text[start:end] == page_content``.
    """
    provenance = {
        "memory_id": memory_id,
        "segment": passage.segment,
        "start": passage.start,
        "end": passage.end,
        "score": passage.score,
    }
    return Document(id=f"{memory_id}#{passage.segment}", page_content=passage.text, metadata={**metadata, **provenance})


def rank_documents(
    candidates: Sequence[tuple[int, Passage]],
    memory_ids: Sequence[str],
    metadata: Sequence[dict[str, Any]],
    query: str,
    k: int,
) -> list[Document]:
    """The ``k`` passages most relevant to ``query`` (BM25 over all candidates), best first; ties keep source order."""
    if not query or not query.strip():
        raise EmptyInputError("the query is empty")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    scores = bm25_scores(query, [p.text for _, p in candidates])
    order = best_first(scores, k)
    docs = []
    for i in order:
        index, p = candidates[i]
        ranked = Passage(p.segment, p.text, p.start, p.end, scores[i])
        docs.append(passage_document(ranked, memory_ids[index], metadata[index]))
    return docs


def all_passages(model: LCIRCModel, memories: Sequence[CompressedMemory]) -> list[tuple[int, Passage]]:
    """``(memory index, passage)`` for every segment of every memory, in source order."""
    return [(i, p) for i, memory in enumerate(memories) for p in passages(memory, model.tokenizer)]


def compress_documents(
    model: LCIRCModel, documents: Sequence[Document | str], *, batch_size: int = 8, progress: bool = False
) -> list[CompressedMemory]:
    """One memory per document (batched recurrences), with the document's metadata kept in the memory.

    Raises:
        EmptyInputError: no documents, or a document without text (named by its position and id).
    """
    if not documents:
        raise EmptyInputError("no documents were given to compress")
    docs = [d if isinstance(d, Document) else Document(page_content=d) for d in documents]
    for i, doc in enumerate(docs):
        if not isinstance(doc.page_content, str) or not doc.page_content.strip():
            raise EmptyInputError(f"document {i}{f' ({doc.id})' if doc.id else ''} has no text to compress")
    memories: list[CompressedMemory] = []
    for start in range(0, len(docs), batch_size):
        batch = docs[start : start + batch_size]
        memories += model.compress_many(
            [d.page_content for d in batch], metadata=[dict(d.metadata) for d in batch], progress=progress
        )
    return memories


class LCIRCMemoryRetriever(BaseRetriever):
    """Retriever over compressed documents: the best-matching memory segments, with span and score.

    Each result is a ``Document`` whose ``page_content`` is one passage (a memory segment, decoded from the
    memory's token ids) and whose ``metadata`` is the source document's metadata plus ``memory_id``,
    ``segment``, ``start`` and ``end`` (the passage's character span in the source) and ``score`` (BM25).
    The same memories can be given to :class:`~lcirc_plugins.langchain.LCIRCMemoryQA` or to
    ``ChatLCIRC(memory=...)``, so a document is compressed once for retrieval and answering.

    Setup:
        ```bash
        pip install "lcirc-plugins[langchain]"
        ```

    Instantiate:
        ```python
        from langchain_core.documents import Document
        from lcirc_plugins import LCIRCModel
        from lcirc_plugins.langchain import LCIRCMemoryRetriever

        model = LCIRCModel.from_backbone("smollm2-135m-instruct")
        text = "Squire Trelawney asked me to write the whole story down. " * 150 + "The treasure map was in the captain's sea chest."
        book = Document(page_content=text, metadata={"source": "ti.txt"}, id="treasure-island")
        retriever = LCIRCMemoryRetriever.from_documents([book], model=model, k=3)
        ```

    Invoke:
        ```python
        for doc in retriever.invoke("Where is the treasure map?"):
            print(doc.metadata["start"], doc.metadata["end"], doc.metadata["score"], doc.page_content[:80])
        retriever.invoke("Where is the treasure map?", k=1)  # the number of results per call
        ```

    Persist:
        ```python
        retriever.save("ti-index")  # memories/*.safetensors + lcirc_retriever.json
        retriever = LCIRCMemoryRetriever.load("ti-index", model=model)
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    model: LCIRCModel = Field(exclude=True, repr=False)
    """The model the memories were made with (its tokenizer decodes the passages)."""
    memories: list[CompressedMemory] = Field(repr=False)
    """One compressed memory per document; the document's metadata is ``memory.metadata``."""
    memory_ids: list[str] | None = None
    """An id per memory (default ``doc-<n>``), reported as ``memory_id`` and in result ids."""
    k: int = Field(default=4, ge=1)
    """How many passages ``invoke`` returns (a call's ``k=`` overrides it)."""

    _passages: list[tuple[int, Passage]] | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **data: Any) -> None:
        # Checks run after pydantic's validation so that our errors (MemoryMismatchError, ...) reach the
        # caller as themselves, not wrapped in a pydantic ValidationError.
        super().__init__(**data)
        self._check()

    def _check(self) -> None:
        if not self.memories:
            raise EmptyInputError("the retriever has no memories: give at least one compressed document")
        if self.memory_ids is None:
            self.memory_ids = [f"doc-{i}" for i in range(len(self.memories))]
        if len(self.memory_ids) != len(self.memories):
            raise ConfigError(f"{len(self.memory_ids)} memory_ids for {len(self.memories)} memories")
        if len(set(self.memory_ids)) != len(self.memory_ids):
            raise ConfigError("memory_ids must be unique")
        for memory in self.memories:  # a memory from another adapter gives MemoryMismatchError here, not at query time
            memory.check_compatible(self.model.adapter_fingerprint, self.model.signature)

    # ----- building and persisting -------------------------------------------------------------------

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document | str],
        *,
        model: LCIRCModel,
        k: int = 4,
        progress: bool = False,
        **kwargs: Any,
    ) -> LCIRCMemoryRetriever:
        """Compress ``documents`` (each becomes one memory; ids are ``Document.id`` or ``doc-<n>``)."""
        docs = [d if isinstance(d, Document) else Document(page_content=d) for d in documents]
        memories = compress_documents(model, docs, progress=progress)
        ids = [d.id or f"doc-{i}" for i, d in enumerate(docs)]
        return cls(model=model, memories=memories, memory_ids=ids, k=k, **kwargs)

    def add_documents(self, documents: Iterable[Document | str], *, progress: bool = False) -> list[str]:
        """Compress more documents into the retriever; returns their memory ids."""
        docs = [d if isinstance(d, Document) else Document(page_content=d) for d in documents]
        offset = len(self.memories)
        ids = [d.id or f"doc-{offset + i}" for i, d in enumerate(docs)]
        assert self.memory_ids is not None
        if set(ids) & set(self.memory_ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"memory ids must be unique; {sorted(set(ids) & set(self.memory_ids)) or ids} are taken")
        memories = compress_documents(self.model, docs, progress=progress)
        with self._lock:
            self.memories.extend(memories)
            self.memory_ids.extend(ids)
            self._passages = None
        return ids

    def save(self, folder: str | Path) -> Path:
        """Write ``memories/<n>.safetensors`` (one per document) and ``lcirc_retriever.json`` into ``folder``.

        Raises:
            TypeError: a document's metadata is not JSON (it is stored as JSON, never pickled).
        """
        folder = Path(folder)
        (folder / MEMORY_FOLDER).mkdir(parents=True, exist_ok=True)
        assert self.memory_ids is not None
        entries = []
        for i, (memory_id, memory) in enumerate(zip(self.memory_ids, self.memories)):
            try:
                json.dumps(memory.metadata)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"metadata of document {memory_id!r} cannot be saved as JSON ({err}); keep metadata to str, numbers, lists and dicts"
                ) from err
            name = f"{MEMORY_FOLDER}/{i:05d}.safetensors"
            memory.save(folder / name)
            entries.append({"id": memory_id, "file": name, "content_sha256": memory.content_sha256})
        index = {"format_version": FORMAT_VERSION, "k": self.k, "memories": entries}
        tmp = folder / (INDEX_NAME + ".tmp")  # the index is written last and renamed: a crash never leaves a half index
        tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        tmp.replace(folder / INDEX_NAME)
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, model: LCIRCModel, **kwargs: Any) -> LCIRCMemoryRetriever:
        """Read a folder written by :meth:`save`; ``kwargs`` (e.g. ``k``) override the saved fields.

        Raises:
            FileNotFoundError: the folder has no index.
            CorruptFileError: the index or a memory file is malformed or was altered.
            MemoryMismatchError: the memories were made by another adapter or backbone than ``model``'s.
        """
        folder = Path(folder)
        path = folder / INDEX_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {folder} a folder written by LCIRCMemoryRetriever.save?")
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            entries = index["memories"]
            ids = [str(e["id"]) for e in entries]
            files = [folder / e["file"] for e in entries]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise CorruptFileError(f"{path} is not a valid retriever index ({err!r})") from err
        if index.get("format_version") != FORMAT_VERSION:
            raise CorruptFileError(
                f"{path} has format_version {index.get('format_version')!r}; this version reads {FORMAT_VERSION}"
            )
        root = folder.resolve()
        memories = []
        for file, entry in zip(files, entries):
            if root not in file.resolve().parents:
                raise CorruptFileError(f"{path} points outside its folder: {entry['file']!r}")
            memory = CompressedMemory.load(file)
            if memory.content_sha256 != entry.get("content_sha256"):
                raise CorruptFileError(f"{file} does not hold the memory the index lists (content hash differs)")
            memories.append(memory)
        return cls(model=model, memories=memories, memory_ids=ids, **{"k": index.get("k", 4), **kwargs})

    # ----- retrieval ---------------------------------------------------------------------------------

    def passages(self) -> list[tuple[int, Passage]]:
        """Every passage as ``(memory index, passage)``, decoded once and cached."""
        with self._lock:
            if self._passages is None:
                self._passages = all_passages(self.model, self.memories)
            return self._passages

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        assert self.memory_ids is not None
        return rank_documents(
            self.passages(), self.memory_ids, [m.metadata for m in self.memories], query, self.k if k is None else k
        )

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        return await asyncio.to_thread(self._get_relevant_documents, query, run_manager=run_manager.get_sync(), k=k)
