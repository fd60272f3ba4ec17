"""Adding books: every upload is checked (type, size, emptiness), copied into the app's data folder under a
sanitized content-addressed name, read (txt, md, pdf, epub) and compressed into the library, or loaded from it.

Every error a user can cause comes back as a message naming the file, never an exception.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.documents import SUPPORTED_EXTENSIONS, read_document
from ..errors import LCIRCError
from .context import AppContext, new_session
from .library import BookEntry, sanitize_filename

log = logging.getLogger(__name__)

UPLOAD_EXTENSIONS = (".txt", ".md", ".pdf", ".epub")
FractionProgress = Callable[[float, str], None]


@dataclass
class Message:
    level: str  # "info" | "warning"
    text: str


@dataclass
class UploadResult:
    session: dict[str, Any]
    messages: list[Message] = field(default_factory=list)
    added: list[BookEntry] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "\n".join(f"- {'**Not added** — ' if m.level == 'warning' else 'Added: '}{m.text}" for m in self.messages)


def _file_path(item: Any) -> Path:
    """Gradio gives paths (str) or objects with ``.name``/``.path``; tests give paths."""
    for attr in ("path", "name"):
        value = getattr(item, attr, None)
        if isinstance(value, str):
            return Path(value)
    return Path(str(item))


def _store_upload(ctx: AppContext, source: Path) -> Path:
    """Copy an accepted upload into ``data_dir/uploads`` under a sanitized, content-addressed name."""
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    target = ctx.library.upload_dir / f"{digest.hexdigest()[:16]}-{sanitize_filename(source.name)}"
    if target.resolve().parent != ctx.library.upload_dir:  # defence in depth; sanitize_filename already forbids this
        raise LCIRCError(f"refusing to write outside the app's data folder: {target}")
    if not target.exists():
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    return target


def _compression_progress(
    ctx: AppContext, progress: FractionProgress | None, name: str, index: int, count: int
) -> Callable[[int, int], None]:
    started = time.perf_counter()
    seg = ctx.model.config.segment_len

    def report(done: int, total: int) -> None:
        if progress is None:
            return
        elapsed = max(time.perf_counter() - started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else float("inf")
        desc = (
            f"[{index}/{count}] {name}: segment {-(-done // seg)}/{-(-total // seg)}, "
            f"{done:,}/{total:,} tokens, {rate:,.0f} tokens/s, {eta:,.0f} s left"
        )
        progress(done / max(total, 1), desc)

    return report


def add_books(
    ctx: AppContext, session: dict[str, Any] | None, files: Sequence[Any] | None, progress: FractionProgress | None = None
) -> UploadResult:
    """Read, check and compress (or load from the library) every uploaded file; one message per file."""
    session = dict(session or new_session())
    session["books"] = list(session.get("books", []))
    result = UploadResult(session)
    files = [f for f in (files or []) if f is not None]
    if not files:
        result.messages.append(Message("warning", "No file was uploaded: choose one or more .txt, .md, .pdf or .epub files."))
        return result
    for index, item in enumerate(files, 1):
        path = _file_path(item)
        name = sanitize_filename(path.name)
        try:
            entry, cached = _add_one(ctx, path, name, _compression_progress(ctx, progress, name, index, len(files)))
        except LCIRCError as err:
            result.messages.append(Message("warning", f"{name}: {_without_paths(ctx, str(err), path)}"))
            continue
        except FileNotFoundError:
            result.messages.append(
                Message("warning", f"{name}: the upload did not arrive (file missing); please upload it again.")
            )
            continue
        except Exception as err:  # a bad file must never take the server down
            log.exception("unexpected error while adding %s", name)
            result.messages.append(Message("warning", f"{name}: could not be read ({type(err).__name__}: {err})."))
            continue
        if entry.key not in session["books"]:
            session["books"].append(entry.key)
        result.added.append(entry)
        how = "loaded from the library (already compressed)" if cached else f"compressed in {entry.compress_seconds:.1f} s"
        result.messages.append(
            Message("info", f"{entry.title}: {entry.num_tokens:,} tokens in {entry.num_segments} segments, {how}.")
        )
    return result


def _without_paths(ctx: AppContext, message: str, path: Path) -> str:
    """Error messages name the file by its full server path; show the user only its name."""
    stored = re.compile(re.escape(str(ctx.library.upload_dir)) + r"/[0-9a-f]{16}-([^\s:]+)")
    return stored.sub(r"\1", message.replace(str(path), path.name))


def _add_one(ctx: AppContext, path: Path, name: str, report: Callable[[int, int], None]) -> tuple[BookEntry, bool]:
    suffix = path.suffix.lower()
    if suffix not in UPLOAD_EXTENSIONS:
        raise LCIRCError(f"unsupported file type {suffix or '(none)'!r}: upload {', '.join(UPLOAD_EXTENSIONS)} files.")
    size = path.stat().st_size
    if size == 0:
        raise LCIRCError("the file is empty: there is no text to compress.")
    if size > ctx.max_upload_bytes:
        raise LCIRCError(
            f"the file is {size / 1e6:.1f} MB, over this app's upload limit of {ctx.max_upload_bytes / 1e6:.1f} MB "
            "(--max-upload-mb); split the book or start the app with a higher limit."
        )
    stored = _store_upload(ctx, path)
    try:
        assert suffix in SUPPORTED_EXTENSIONS
        document = read_document(stored, max_bytes=ctx.max_upload_bytes)
    except Exception:
        stored.unlink(missing_ok=True)  # keep only uploads that were books
        raise
    title = document.title if document.title and document.title != stored.stem else Path(name).stem
    return ctx.library.add(document.text, title=title, filename=name, sections=document.sections, progress=report)
