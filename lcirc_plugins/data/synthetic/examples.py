"""The example type of every synthetic task, ``LongContextExample``, and its JSONL files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Tokenizer(Protocol):
    """What the length targeting needs from a tokenizer: a Hugging Face tokenizer's ``__call__``."""

    def __call__(self, text: str, **kwargs: Any) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class LongContextExample:
    """One (context, question, answer) example with a record of where its evidence is.

    ``answers`` holds every acceptable answer; ``metadata["match"]`` says how to score: ``"any"`` (one
    of ``answers`` is enough, e.g. "hollow of the old oak" / "the hollow of the old oak") or ``"all"``
    (multi-value and multi-query needles: every value in ``answers`` must be given; ``answer`` joins them).
    ``depth`` is where the evidence sits as a fraction of the context (0 = start, 1 = end): the depth it
    was inserted at for inserted evidence (the actual place is snapped to the nearest sentence start), or
    ``None`` when the evidence is in several places (see ``metadata["depths"]``). ``evidence_spans`` are
    ``(start, end)`` character offsets into ``context`` of the evidence sentences.
    ``metadata`` holds JSON values only (lists, not tuples), so an example survives a JSONL round trip.
    """

    context: str
    question: str
    answer: str
    answers: tuple[str, ...]
    task: str
    depth: float | None = None
    evidence_spans: tuple[tuple[int, int], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # JSON gives lists back; store tuples so that equality and immutability hold after a round trip.
        object.__setattr__(self, "answers", tuple(self.answers))
        object.__setattr__(self, "evidence_spans", tuple((int(s), int(e)) for s, e in self.evidence_spans))
        for start, end in self.evidence_spans:
            if not 0 <= start <= end <= len(self.context):
                raise ValueError(f"evidence span ({start}, {end}) is outside the context of {len(self.context)} characters")

    def to_json(self) -> str:
        """One JSON line (no newline), UTF-8 text kept as is."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> LongContextExample:
        """Inverse of :meth:`to_json`; also accepts an already parsed dict."""
        record = json.loads(data) if isinstance(data, (str, bytes)) else dict(data)
        return cls(**record)


def write_jsonl(examples: Iterable[LongContextExample], path: str | os.PathLike[str]) -> int:
    """Write examples one per line (streaming, so a generator of any size works); returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(example.to_json() + "\n")
            count += 1
    return count


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[LongContextExample]:
    """Yield the examples of a JSONL file lazily (blank lines are skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield LongContextExample.from_json(line)
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{path}:{line_no}: not a LongContextExample line ({exc})") from exc
