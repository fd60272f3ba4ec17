"""What the app does, as plain functions: add uploaded books, list them, answer questions with provenance.

Nothing here imports gradio, so every handler runs (and is tested) without a server. A *session* is a
plain dict (kept per browser tab in ``gr.State``): the books this user added and nothing else, so users
never see each other's chats. Every error a user can cause comes back as a message, never an exception.

Provenance is read off the adapter's weights once an answer is complete
(:mod:`lcirc_plugins.model.provenance`): the gated cross-attention says which compressed segments the
answer read, the compressor's attention says which of their tokens, and both map back to character spans
and chapters. When the adapter's gates are closed (an untrained adapter reads nothing from the memory) the
app says so and falls back to BM25 over the memory's segments (:func:`lcirc_plugins.passages.rank_passages`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.documents import SUPPORTED_EXTENSIONS, read_document
from ..errors import InvalidRequestError, LCIRCError
from ..model.lcirc_model import LCIRCModel, PreparedPrompt
from ..model.memory import CompressedMemory, MemoryRows
from ..model.provenance import evidence, memory_attention, segment_weights
from ..model.status import ModelStatus, model_status
from ..passages import bm25_scores, passages, rank_passages
from .library import BookEntry, Library, chapter_at, sanitize_filename

log = logging.getLogger(__name__)

UPLOAD_EXTENSIONS = (".txt", ".md", ".pdf", ".epub")
QD_MODE, PLAIN_MODE = "QD-LCIRC", "LCIRC"
NO_BOOK_MESSAGE = "Upload a book (or pick one from the library) before asking a question."
PROVENANCE_NOTE = (
    "Passages are ranked by the attention the answer paid to the compressed book: the decoder's gated "
    "cross-attention over the memory, times the compressor's attention over each segment's tokens."
)
BM25_NOTE = (
    "This adapter's cross-attention gates are closed (it is untrained), so the answer read nothing from the "
    "memory; passages are ranked by word overlap with the question instead (BM25)."
)
NO_TEXT = "(the model produced no text)"
WAITING_NOTE = "_The passages behind the answer appear when it is complete._"
FractionProgress = Callable[[float, str], None]


@dataclass
class AppContext:
    """Everything the handlers share: the model, the library and the limits."""

    model: LCIRCModel
    library: Library
    max_upload_bytes: int = 50 * 1024 * 1024
    share_library: bool = True  # False: a session sees only the books it uploaded itself
    top_k: int = 3
    adapter: str | None = None  # how the adapter was named ("default" or a directory), for the status line

    @classmethod
    def create(cls, model: LCIRCModel, data_dir: str | Path, **kwargs: Any) -> AppContext:
        return cls(model=model, library=Library(data_dir, model), **kwargs)

    @functools.cached_property
    def status(self) -> ModelStatus:
        return model_status(self.model, self.adapter)

    @property
    def query_dependent(self) -> bool:
        return bool(self.model.config.query_dependent)


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


def new_session() -> dict[str, Any]:
    return {"books": []}


# ----- books --------------------------------------------------------------------------------------------


def book_choices(ctx: AppContext, session: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, key) of the books this session may pick: its own, plus the shared library if enabled."""
    mine = [k for k in session.get("books", []) if ctx.library.get(k)]
    keys = mine + ([e.key for e in ctx.library.books() if e.key not in mine] if ctx.share_library else [])
    return [(ctx.library.get(k).label, k) for k in keys]


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


# ----- API input checks ---------------------------------------------------------------------------------
# The UI always sends well-formed values; a client of the HTTP API may send anything. These checks turn a
# malformed call into one InvalidRequestError naming the field (the UI shows it as a gr.Error).


def check_text(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string, got {type(value).__name__}")
    return value


def check_book_keys(keys: Any) -> Any:
    """Book keys are strings (one, or a list): a dict or a number where a key goes is refused."""
    book_keys = [keys] if isinstance(keys, str) else keys
    if book_keys is not None and not (isinstance(book_keys, list) and all(isinstance(k, str) for k in book_keys)):
        raise InvalidRequestError(f"books must be a list of book keys (strings, as /add_books returns them), got {keys!r:.120}")
    return keys


def check_choice(name: str, value: Any, choices: Sequence[str]) -> Any:
    if value not in choices:
        raise InvalidRequestError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r:.60}")
    return value


def check_number(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a float when it is a finite number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequestError(f"{name} must be a number from {low:g} to {high:g}, got {value!r:.60}")
    return float(value)


# ----- questions ----------------------------------------------------------------------------------------


def _features(ctx: AppContext, keys: Sequence[str], question: str, mode: str) -> list[tuple[str, CompressedMemory, MemoryRows]]:
    """(key, memory, rows) for the chosen books in the order picked; rows are QD-recompressed in QD mode."""
    out = []
    for key in keys:
        memory = ctx.library.memory(key)
        qd = mode == QD_MODE and ctx.query_dependent
        out.append((key, memory, ctx.model.read_memories([memory], question, query_dependent=qd)))
    return out


def ask(
    ctx: AppContext,
    session: dict[str, Any] | None,
    question: str,
    keys: Sequence[str] | str | None,
    history: list[dict[str, Any]] | None = None,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    mode: str = QD_MODE,
) -> Iterator[tuple[list[dict[str, Any]], str, Any]]:
    """Stream (chat history, provenance markdown, provenance figure) while the answer is generated."""
    history = [dict(m) for m in (history or [])]
    earlier = _chat_turns(history)
    keys = [keys] if isinstance(keys, str) else [k for k in (keys or []) if k]
    question = (question or "").strip()
    allowed = {k for _, k in book_choices(ctx, session or new_session())}
    keys = [k for k in keys if k in allowed]
    if not question:
        yield history, "⚠️ Type a question first.", None
        return
    history.append({"role": "user", "content": question})
    if not keys:
        history.append({"role": "assistant", "content": f"⚠️ {NO_BOOK_MESSAGE}"})
        yield history, f"⚠️ {NO_BOOK_MESSAGE}", None
        return
    history.append({"role": "assistant", "content": ""})
    try:
        ids = ctx.model.prompt_ids(question, int(max_new_tokens), history=earlier)
        books = _features(ctx, keys, question, mode)
        features, tokens = MemoryRows.concat([rows for _, _, rows in books]), sum(m.num_tokens for _, m, _ in books)
    except Exception as err:  # LCIRCError is the user's; anything else must not end the session either
        if not isinstance(err, LCIRCError):
            log.exception("could not prepare an answer")
        history[-1]["content"] = f"⚠️ {err}"
        yield history, f"⚠️ {err}", None
        return
    markdown, figure = WAITING_NOTE, None
    yield history, markdown, figure
    kwargs: dict[str, Any] = {}
    if temperature and float(temperature) > 0:
        kwargs.update(do_sample=True, temperature=float(temperature))
    stream = ctx.model.stream_text(PreparedPrompt(ids, features, tokens), max_new_tokens=int(max_new_tokens), **kwargs)
    try:
        for piece in stream:
            history[-1]["content"] += piece
            yield history, markdown, figure
        _found, markdown, figure = answer_provenance(ctx, books, question, ids, history[-1]["content"])
        yield history, markdown, figure
    except Exception as err:  # shown in the chat; the server goes on
        if not isinstance(err, LCIRCError):
            log.exception("generation failed")
        history[-1]["content"] += f"\n\n⚠️ {err}"
        yield history, markdown, figure
    finally:
        stream.close()  # the user pressed stop (this generator was closed) or generation ended: free the worker
    if not history[-1]["content"].strip():
        history[-1]["content"] = NO_TEXT
        yield history, markdown, figure


def _chat_turns(history: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Earlier (question, answer) pairs of the chat as plain text turns; warnings and failed turns are left out."""
    turns = []
    for user, assistant in zip(history[::2], history[1::2]):
        if user.get("role") != "user" or assistant.get("role") != "assistant":
            continue
        question, answer = _message_text(user.get("content")), _message_text(assistant.get("content"))
        if question.strip() and answer.strip() and "⚠️" not in answer and answer != NO_TEXT:
            turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return turns


def _message_text(content: Any) -> str:
    """A chat message's text: Gradio sends a string or a list of parts like ``{"type": "text", "text": ...}``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def answer_provenance(
    ctx: AppContext, books: list[tuple[str, CompressedMemory, MemoryRows]], question: str, prompt_ids: torch.Tensor, answer: str
) -> tuple[list[dict[str, Any]], str, Any]:
    """The passages the answer attended to most, over all chosen books (BM25 when the gates are closed)."""
    answer_ids = ctx.model.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
    features = MemoryRows.concat([rows for _, _, rows in books])
    weights = memory_attention(ctx.model, torch.cat([prompt_ids, answer_ids], dim=1), features)
    total = float(weights.sum())
    if total <= 0:
        return provenance(ctx, [key for key, _, _ in books], question)
    found, curves, offset = [], [], 0
    for key, memory, rows in books:
        entry, share = ctx.library.get(key), weights[offset : offset + len(rows.features)]
        offset += len(rows.features)
        for e in evidence(ctx.model, memory, rows.features, share, top_k=ctx.top_k, question=question):
            record = _passage(entry, memory, e.segment, e.start, e.end, e.text)
            found.append({**record, "score": e.weight * float(share.sum()) / total})
        per_segment = (segment_weights(memory, share) / total).tolist()
        curves.append((entry.title, [100.0 * int(s) / max(memory.num_chars, 1) for s in memory.spans[:, 0]], per_segment))
    found.sort(key=lambda r: -r["score"])
    found = found[: ctx.top_k]
    return found, provenance_markdown(found, PROVENANCE_NOTE, "attention"), provenance_figure(curves, found, "attention share")


def _passage(entry: BookEntry, memory: CompressedMemory, segment: int, start: int, end: int, text: str) -> dict[str, Any]:
    return {
        "book": entry.title,
        "key": entry.key,
        "segment": segment,
        "start": start,
        "end": end,
        "chapter": _chapters(entry.sections, start, end),
        "position": 100.0 * start / max(memory.num_chars, 1),
        "text": text,
    }


def provenance(ctx: AppContext, keys: Sequence[str], question: str) -> tuple[list[dict[str, Any]], str, Any]:
    """Top passages for ``question`` by BM25 over the chosen books: records, markdown quotes and a score plot."""
    found: list[dict[str, Any]] = []
    curves = []
    tokenizer = ctx.model.tokenizer
    for key in keys:
        entry, memory = ctx.library.get(key), ctx.library.memory(key)
        for p in rank_passages(memory, tokenizer, question, top_k=ctx.top_k):
            found.append({**_passage(entry, memory, p.segment, p.start, p.end, p.text), "score": p.score})
        every = passages(memory, tokenizer)
        scores = bm25_scores(question, [p.text for p in every])
        curves.append((entry.title, [100.0 * p.start / max(memory.num_chars, 1) for p in every], scores))
    found.sort(key=lambda r: -r["score"])
    found = [r for r in found if r["score"] > 0][: ctx.top_k]  # a passage sharing no word is no evidence
    return found, provenance_markdown(found, BM25_NOTE, "BM25 score"), provenance_figure(curves, found, "BM25 score")


def _chapters(sections: list[list[Any]], start: int, end: int) -> str | None:
    """The chapter of a passage; 'A → B' when the passage runs across a chapter heading."""
    first, last = chapter_at(sections, start), chapter_at(sections, max(start, end - 1))
    if first == last or last is None:
        return first
    return f"{first} → {last}" if first else last


def provenance_markdown(found: list[dict[str, Any]], note: str, score_name: str) -> str:
    lines = ["### Where the answer comes from", f"_{note}_", ""]
    if not found:
        lines.append("No passage of the book shares a word with the question.")
    for rank, r in enumerate(found, 1):
        quote = " ".join(r["text"].split())
        quote = quote if len(quote) <= 400 else quote[:400] + " …"
        chapter = f", {r['chapter']}" if r["chapter"] else ""
        lines.append(
            f"**Passage {rank}** — {r['book']}{chapter}, characters {r['start']:,}–{r['end']:,} "
            f"({r['position']:.1f}% into the book), {score_name} {r['score']:.2f}"
        )
        lines.append(f"> {quote}")
        lines.append("")
    return "\n".join(lines)


def provenance_figure(curves: list[tuple[str, list[float], list[float]]], found: list[dict[str, Any]], ylabel: str) -> Any:
    """A small matplotlib figure: segment score along the book (position %), top passages marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 2.2), dpi=100)
    axes = figure.add_subplot()
    for title, positions, scores in curves:
        axes.plot(positions, scores, linewidth=1, label=title[:40])
    for r in found:
        axes.axvline(r["position"], color="tab:red", alpha=0.4, linewidth=1)
    axes.set_xlim(0, 100)
    axes.set_xlabel("position in the book (%)")
    axes.set_ylabel(ylabel)
    if len(curves) > 1:
        axes.legend(fontsize=7)
    figure.tight_layout()
    return figure
