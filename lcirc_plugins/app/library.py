"""The app's library of compressed books: one safetensors memory per (text, adapter, backbone), plus a JSON index.

A book is keyed by the sha256 of its text, the adapter fingerprint and a hash of the backbone signature,
so the same book uploaded again with the same model loads instantly (no recompression), also after a
restart, while another adapter or backbone compresses it anew. Everything is written inside ``data_dir``:
``library.json`` (the index), ``memories/<key>.safetensors`` and ``uploads/<sha>-<safe name>`` (a copy of
every accepted upload). Writes are atomic (temp file, then rename) and guarded by a lock.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data.documents import text_sections
from ..errors import CorruptFileError, LCIRCError
from ..model.lcirc_model import LCIRCModel
from ..model.memory import CompressedMemory

INDEX_NAME = "library.json"
INDEX_VERSION = 1
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
ProgressCallback = Callable[[int, int], None]


def sanitize_filename(name: str, max_len: int = 80) -> str:
    """A file name safe to write anywhere: no directories, no dots in front, ASCII letters/digits/._- only."""
    name = unicodedata.normalize("NFKD", Path(str(name).replace("\\", "/")).name).encode("ascii", "ignore").decode()
    name = _SAFE_CHARS.sub("_", name).strip("._") or "upload"
    stem, dot, suffix = name.rpartition(".")
    if dot and len(suffix) <= 8:
        return f"{stem[: max_len - len(suffix) - 1]}.{suffix}"
    return name[:max_len]


@dataclass
class BookEntry:
    """One compressed book in the library index."""

    key: str
    title: str
    filename: str
    text_sha256: str
    adapter_fingerprint: str
    num_chars: int
    num_tokens: int
    num_segments: int
    sections: list[list[Any]] = field(default_factory=list)
    memory_file: str = ""
    created: float = 0.0
    compress_seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.title} ({self.num_tokens:,} tokens)"


class Library:
    """Compressed books of one model, stored in ``data_dir`` and shared by all sessions of the app."""

    def __init__(self, data_dir: str | Path, model: LCIRCModel, cache_size: int = 8) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.memory_dir = self.data_dir / "memories"
        self.upload_dir = self.data_dir / "uploads"
        for folder in (self.data_dir, self.memory_dir, self.upload_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.index_path = self.data_dir / INDEX_NAME
        self.model_key = self._model_key(model)
        self.compress_calls = 0  # how many books were really compressed (not loaded): tests and logs read it
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, CompressedMemory] = OrderedDict()
        self._cache_size = cache_size
        self._entries: dict[str, BookEntry] = self._read_index()

    # ----- keys and index ---------------------------------------------------------------------------

    @staticmethod
    def _model_key(model: LCIRCModel) -> str:
        signature = json.dumps(
            {k: model.signature.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "tokenizer")},
            sort_keys=True,
            default=str,
        )
        return f"{model.adapter_fingerprint[:12]}-{hashlib.sha256(signature.encode()).hexdigest()[:8]}"

    def key_for(self, text: str) -> str:
        return f"{hashlib.sha256(text.encode('utf-8')).hexdigest()[:24]}-{self.model_key}"

    def _read_index(self) -> dict[str, BookEntry]:
        if not self.index_path.is_file():
            return {}
        try:
            raw = json.loads(self.index_path.read_text(encoding="utf-8"))
            entries = {e["key"]: BookEntry(**e) for e in raw.get("books", [])}
        except (ValueError, TypeError, KeyError) as err:
            # A damaged index must not stop the app: keep it aside and start a new one.
            self.index_path.replace(self.index_path.with_name(f"{INDEX_NAME}.broken-{int(time.time())}"))
            print(f"warning: the library index was unreadable ({err}); it was moved aside and a new one started")
            return {}
        return {k: e for k, e in entries.items() if (self.memory_dir / e.memory_file).is_file()}

    def _write_index(self) -> None:
        payload = {"version": INDEX_VERSION, "books": [asdict(e) for e in self._entries.values()]}
        tmp = self.index_path.with_name(INDEX_NAME + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.index_path)

    # ----- queries ----------------------------------------------------------------------------------

    def books(self) -> list[BookEntry]:
        """Books usable with this model, oldest first."""
        with self._lock:
            return sorted((e for e in self._entries.values() if e.key.endswith(self.model_key)), key=lambda e: e.created)

    def get(self, key: str) -> BookEntry | None:
        with self._lock:
            return self._entries.get(key)

    def memory_path(self, key: str) -> Path:
        entry = self.get(key)
        if entry is None:
            raise LCIRCError(f"book {key} is not in the library")
        return self.memory_dir / entry.memory_file

    def memory(self, key: str) -> CompressedMemory:
        """The compressed memory of a book (kept in a small in-process cache)."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            memory = CompressedMemory.load(self.memory_path(key))
            memory.check_compatible(self.model.adapter_fingerprint, self.model.signature)
            self._remember(key, memory)
            return memory

    def _remember(self, key: str, memory: CompressedMemory) -> None:
        self._cache[key] = memory
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # ----- adding books -----------------------------------------------------------------------------

    def add(
        self,
        text: str,
        *,
        title: str,
        filename: str,
        sections: list[tuple[str, int]] | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[BookEntry, bool]:
        """The library entry for ``text``, compressing it only if it is new; returns (entry, was_cached)."""
        key = self.key_for(text)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                try:
                    self.memory(key)
                    return entry, True
                except (CorruptFileError, FileNotFoundError, LCIRCError):
                    self._entries.pop(key, None)  # damaged or foreign file: compress again below
        sections = list(sections) if sections else text_sections(text)
        started = time.perf_counter()
        metadata = {"title": title, "source": filename, "sections": [[t, int(o)] for t, o in sections]}
        memory = self.model.compress(text, progress=progress or False, metadata=metadata)
        seconds = time.perf_counter() - started
        with self._lock:
            self.compress_calls += 1
            entry = BookEntry(
                key=key,
                title=title,
                filename=filename,
                text_sha256=key.split("-")[0],
                adapter_fingerprint=self.model.adapter_fingerprint,
                num_chars=memory.num_chars,
                num_tokens=memory.num_tokens,
                num_segments=memory.num_segments,
                sections=[[t, int(o)] for t, o in sections],
                memory_file=f"{key}.safetensors",
                created=time.time(),
                compress_seconds=round(seconds, 3),
            )
            memory.save(self.memory_dir / entry.memory_file)
            self._entries[key] = entry
            self._remember(key, memory)
            self._write_index()
        return entry, False
