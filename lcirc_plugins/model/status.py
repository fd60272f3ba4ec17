"""What model is answering, in words: the backbone, the adapter (trained or not) and its model card's numbers.

Front ends show this before the first answer (the app's header, ``lcirc ask`` and ``lcirc info``), so an
untrained adapter's answers (the backbone's own guesses: closed gates read nothing from the memory) are
never mistaken for answers read from the book. Whether an adapter is trained is read off its weights
(any open gate), not off where it was loaded from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lcirc_model import LCIRCModel

UNTRAINED_NOTICE = (
    "The adapter is untrained (its cross-attention gates are closed), so answers are the backbone's own guesses "
    "and do not use the book."
)
KEYWORD_PASSAGES = "The passages shown under an answer come from keyword ranking (BM25), not from the model."
CARD_NAME = "MODEL_CARD.md"
CARD_START, CARD_END = "<!-- measured:start -->", "<!-- measured:end -->"  # written by lcirc_plugins.eval.card
# The adapter's own rows, per task the path the front ends answer with first (the book in memory, the question
# scoring it), then whichever the card measured.
HEADLINE_SYSTEMS = ("qd-lcirc-memory", "lcirc-memory", "qd-lcirc", "lcirc")
HEADLINE_METRICS = ("accuracy", "perplexity")


@dataclass(frozen=True)
class ModelStatus:
    """The loaded model as a user should know it before asking anything."""

    backbone: str
    adapter: str  # "default", a directory, or "untrained fallback"
    fingerprint: str
    trained: bool
    headline: str | None = None  # the model card's measured numbers, when the adapter has a card

    @property
    def adapter_kind(self) -> str:
        """``default (trained)`` or ``untrained fallback (untrained: gates closed)``: what a memory records."""
        return f"{self.adapter} ({'trained' if self.trained else 'untrained: gates closed'})"

    @property
    def adapter_label(self) -> str:
        return f"{self.adapter_kind}, fingerprint {self.fingerprint[:12]}"

    @property
    def notice(self) -> str | None:
        return None if self.trained else UNTRAINED_NOTICE

    def lines(self) -> list[str]:
        """``backbone: ...`` / ``adapter: ...`` (/ ``card: ...``) / the untrained notice, for a terminal."""
        rows = [f"backbone: {self.backbone}", f"adapter:  {self.adapter_label}"]
        rows += [f"card:     {self.headline}"] if self.headline else []
        return rows + ([f"note:     {self.notice}"] if self.notice else [])

    def markdown(self) -> str:
        """The same, for the top of the app's page."""
        text = f"**Backbone:** {self.backbone} · **Adapter:** {self.adapter_label}"
        text += f" · **Model card:** {self.headline}" if self.headline else ""
        return text + (f"\n\n⚠️ **{self.notice} {KEYWORD_PASSAGES}**" if self.notice else "")


def gates_open(model: LCIRCModel) -> bool:
    """True when any gated cross-attention block lets the memory through (a trained adapter)."""
    return any(bool(p.detach().abs().max() > 0) for name, p in model.adapter.named_parameters() if name.endswith("_gate"))


def model_status(model: LCIRCModel, adapter: str | Path | None = None) -> ModelStatus:
    """The status of ``model``; ``adapter`` is how it was named (``"default"`` or a directory), if known."""
    from .lcirc_model import DEFAULT_ADAPTER_DIR

    trained = gates_open(model)
    directory = DEFAULT_ADAPTER_DIR if str(adapter) == "default" else Path(adapter) if adapter else None
    if directory is not None and not directory.is_dir():
        directory = None  # "default" while none is shipped: the untrained fallback
    name = ("default" if str(adapter) == "default" else str(directory)) if directory else "untrained fallback"
    if trained and directory is None:
        name = "in-memory adapter"
    headline = card_headline(directory / CARD_NAME) if directory else None
    return ModelStatus(model.backbone_name or "?", name, model.adapter_fingerprint, trained, headline)


def card_headline(card: Path) -> str | None:
    """The adapter's row per task of the card's measured table as ``system task length: metric value`` items, the
    answering path's when measured (``HEADLINE_SYSTEMS``); None without a card."""
    try:
        text = card.read_text(encoding="utf-8")
    except OSError:
        return None
    measured = text.split(CARD_START, 1)[-1].split(CARD_END, 1)[0] if CARD_START in text else ""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")] for line in measured.splitlines() if line.startswith("|")
    ]
    if len(rows) < 3:
        return None
    header, best = rows[0], {}
    for row in rows[2:]:
        record = dict(zip(header, row))
        if record.get("system") not in HEADLINE_SYSTEMS:
            continue
        cell, rank = (record.get("task", "?"), record.get("length", "")), HEADLINE_SYSTEMS.index(record["system"])
        if rank < best.get(cell, (len(HEADLINE_SYSTEMS),))[0]:  # a cell keeps its first place in the table
            best[cell] = (rank, record)
    items = [
        f"{record['system']} {task} {length}: {metric} {record[metric]}"
        for (task, length), (_, record) in best.items()
        for metric in HEADLINE_METRICS
        if record.get(metric) not in (None, "", "-")  # markdown_table writes "-" for a missing value
    ]
    return "; ".join(items[:4]) or None
