"""The converted-backbone cache: a GGUF backbone is de-quantized once, then memory-mapped from safetensors.

Loading SmolLM2's GGUF costs ~20 s on every start (the tokenizer is rebuilt from GGUF metadata and every
tensor is de-quantized to float32); the same weights saved as safetensors load by mmap in about a second.
An entry is a folder ``<cache>/backbones/<key>/`` (``config.json``, ``model.safetensors``, the tokenizer
files and ``manifest.json``) keyed by the source file's sha256, the dtype, the torch / transformers /
safetensors versions and :data:`FORMAT_VERSION`, so a changed file or library never gets stale weights.
Entries are written to a temporary folder and renamed into place; one whose files do not match its
manifest is rebuilt with a warning. Importing this module is cheap (``lcirc cache`` needs no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorruptFileError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
_LIBRARIES = ("torch", "transformers", "safetensors")
Loaded = tuple["PreTrainedModel", "PreTrainedTokenizerBase"]


class DamagedCacheWarning(UserWarning):
    """A cache entry did not match its manifest (truncated, edited, half-deleted) and is being rebuilt."""


def cache_root() -> Path:
    """``$LCIRC_CACHE_DIR``, else ``$XDG_CACHE_HOME/lcirc-plugins``, else ``~/.cache/lcirc-plugins``."""
    if os.environ.get("LCIRC_CACHE_DIR"):
        return Path(os.environ["LCIRC_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lcirc-plugins"


def backbones_dir() -> Path:
    return cache_root() / "backbones"


def file_sha256(path: Path) -> str:
    """The source's full hash (0.3 s for SmolLM2's 98 MB): size and mtime alone can miss an edit in place."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key_fields(source: Path, dtype: torch.dtype) -> dict[str, Any]:
    """Everything the converted weights depend on; any change gives another key."""
    return {
        "format_version": FORMAT_VERSION,
        "source_sha256": file_sha256(source),
        "dtype": str(dtype).removeprefix("torch."),
        **{name: metadata.version(name) for name in _LIBRARIES},
    }


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def cached_backbone(source: Path, dtype: torch.dtype, convert: Callable[[], Loaded], *, location: str) -> Loaded:
    """The backbone of ``source``, from the cache when a valid entry exists, else ``convert()`` and store it.

    ``location`` is recorded as the model's ``_name_or_path`` (the user's name for it, not the cache folder).
    A cache that cannot be written (read-only home, full disk) costs only speed: a warning, then the load.
    """
    fields = cache_key_fields(source, dtype)
    entry = backbones_dir() / cache_key(fields)
    if entry.exists():
        try:
            return _named(_read_entry(entry, dtype), location)
        except (CorruptFileError, OSError, ValueError) as err:
            warnings.warn(f"the cached backbone {entry} is damaged ({err}); rebuilding it", DamagedCacheWarning, stacklevel=3)
            shutil.rmtree(entry, ignore_errors=True)
    model, tokenizer = convert()
    try:
        _write_entry(entry, model, tokenizer, {**fields, "source": str(source)})
    except OSError as err:
        warnings.warn(
            f"could not write the backbone cache in {entry.parent} ({err}); the next start converts again", stacklevel=3
        )
    return model, tokenizer


def _named(loaded: Loaded, location: str) -> Loaded:
    model, tokenizer = loaded
    model.config._name_or_path = location
    model.name_or_path = location
    tokenizer.name_or_path = location
    return model, tokenizer


def _check_entry(entry: Path) -> dict[str, Any]:
    """The manifest, once every file it lists has the recorded size and the weights' header parses."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        sizes = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"unreadable {MANIFEST}: {err}") from err
    for name, size in sizes.items():
        actual = (entry / name).stat().st_size if (entry / name).is_file() else None
        if actual != size:
            raise CorruptFileError(f"{name} has {actual} bytes, the manifest says {size}")
    _check_safetensors(entry / WEIGHTS)
    return manifest


def _check_safetensors(path: Path) -> None:
    """The file holds exactly its header and the tensors the header lists (read without torch)."""
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if not 0 < size < MAX_HEADER_BYTES:
            raise CorruptFileError(f"{path.name}: a header of {size} bytes is not a safetensors header")
        try:
            header = json.loads(handle.read(size))
            end = max((t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise CorruptFileError(f"{path.name}: unreadable safetensors header ({err})") from err
    if path.stat().st_size != 8 + size + end:
        raise CorruptFileError(f"{path.name} has {path.stat().st_size} bytes, its header describes {8 + size + end}")


def _read_entry(entry: Path, dtype: torch.dtype) -> Loaded:
    """Load a checked entry: safetensors only, no remote code (the files were written by this module)."""
    _check_entry(entry)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(entry, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    return model, tokenizer


def _write_entry(entry: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fields: dict[str, Any]) -> None:
    """Write the entry into a temporary sibling folder, then rename it into place (atomic on one file system)."""
    from safetensors.torch import save_model

    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the saved weights are plain tensors, not GGUF blocks
        config.pop("_name_or_path", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / WEIGHTS))  # tied weights are stored once; from_pretrained ties them again
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({**fields, "files": files}, indent=2), encoding="utf-8")
        try:
            tmp.rename(entry)
        except OSError:
            if not entry.exists():  # another process may have finished the same entry first: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----- `lcirc cache info|clear` -------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    key: str
    source: str
    dtype: str
    bytes: int
    ok: bool


def cache_entries() -> list[CacheEntry]:
    """Every entry in the cache, with its size and whether it passes the manifest check."""
    folder = backbones_dir()
    entries = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            manifest, ok = _check_entry(entry), True
        except (CorruptFileError, OSError):
            manifest, ok = {}, False
        size = sum(p.stat().st_size for p in entry.iterdir() if p.is_file())
        entries.append(CacheEntry(entry.name, manifest.get("source", "?"), manifest.get("dtype", "?"), size, ok))
    return entries


def clear_cache() -> int:
    """Delete every converted backbone (also unfinished temporary folders); returns the bytes freed."""
    folder = backbones_dir()
    if not folder.is_dir():
        return 0
    freed = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return freed
