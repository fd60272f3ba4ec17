"""The passages behind an answer, as the app shows them: quotes naming book, chapter and place, and a plot of
every segment's score along the books.

The passages themselves come from ``LCIRCModel.provenance`` (the adapter's attention, or BM25 when its gates are
closed: an untrained adapter reads nothing from the memory), the same call the integrations and the CLI make;
the app says which of the two it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.documents import chapter_at
from ..model.lcirc_model import PreparedPrompt
from ..model.memory import CompressedMemory
from .context import AppContext
from .library import BookEntry

PROVENANCE_NOTE = (
    "Passages are ranked by the attention the answer paid to the compressed book: the decoder's gated "
    "cross-attention over the memory, times the compressor's attention over each segment's tokens."
)
BM25_NOTE = (
    "This adapter's cross-attention gates are closed (it is untrained), so the answer read nothing from the "
    "memory; passages are ranked by word overlap with the question instead (BM25)."
)


def answer_sources(
    ctx: AppContext, keys: Sequence[str], prepared: PreparedPrompt, answer: str
) -> tuple[list[dict[str, Any]], str, Any]:
    """The passages behind an answer (``LCIRCModel.provenance``: attention, or BM25 when the gates are closed)
    as records naming book and chapter, markdown quotes and a plot of every segment's score along the books."""
    found = ctx.model.provenance(prepared, answer, top_k=ctx.top_k)
    entries = [ctx.library.get(key) for key in keys]
    records = [
        {**_passage(entries[p.source], prepared.sources[p.source], p.segment, p.start, p.end, p.text), "score": p.score}
        for p in found.passages
    ]
    curves = []
    for entry, memory, scores in zip(entries, prepared.sources, found.segment_scores):
        starts = [100.0 * int(start) / max(memory.num_chars, 1) for start in memory.spans[:, 0]]
        curves.append((entry.title, starts, scores.tolist()))
    if found.method == "attention":
        note, score_name, axis = PROVENANCE_NOTE, "attention", "attention share"
    else:
        note, score_name, axis = BM25_NOTE, "BM25 score", "BM25 score"
    return records, provenance_markdown(records, note, score_name), provenance_figure(curves, records, axis)


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
