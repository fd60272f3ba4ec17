"""Distractor segments: plain book text whose memory is computed once and read around each training example.

Why: without slot correction the layer reader compresses every segment on its own, so a book's memory is the
concatenation of its segments' slots, and what grows with the book is what the reader must look past: more
slots, at positions further back. An 8K-32K-token training example would cost a frozen forward over all of it
at every step. Drawing the other segments from a pool of plain book segments, each compressed once, gives the
reader the same haystack at the cost of the example's own segments. The teacher and the salience target see
only the example's own text (it holds the answer); distractors add no loss, only rows to look past.
"""

from __future__ import annotations

import dataclasses
import random

import torch

from ..errors import ConfigError, LCIRCError
from ..model.lcirc_model import LCIRCModel
from ..model.memory import MemoryRows
from ..model.passages import best_first, bm25_scores
from .bptt import whole_rows
from .data import iter_records


class DistractorPool:
    """Up to ``size`` full segments of plain text, shuffled once; each is compressed the first time it is drawn.

    Slots are cached as the salience scorer selected them then: a distractor can lag the scorer by some steps,
    which only changes which plain-text tokens the reader must ignore.
    """

    def __init__(self, model: LCIRCModel, source: str, size: int, seed: int) -> None:
        compressor = model.adapter.compressor
        if not model.adapter.reads_layers or compressor.corrected:
            raise ConfigError(
                "distractor segments need a memory whose segments are compressed independently: "
                "the layer reader without slot_correction"
            )
        length = model.config.segment_len
        segments: list[torch.Tensor] = []
        for path in (part.strip() for part in source.split(",") if part.strip()):
            for record in iter_records(path):
                ids = torch.tensor(model.tokenizer(record["text"], add_special_tokens=False)["input_ids"])
                segments.extend(ids[: len(ids) // length * length].split(length))
        if not segments:
            raise LCIRCError(f"no full {length}-token segment in the distractor text {source!r}")
        random.Random(f"{seed}-distractors").shuffle(segments)
        self.model, self.segments = model, segments[:size]
        self.cache: dict[int, MemoryRows] = {}
        self.texts: list[str] | None = None  # decoded on the first BM25 draw

    def __len__(self) -> int:
        return len(self.segments)

    def draw(self, rng: random.Random, count: int, whole: int = 0, question: str = "", candidates: int = 0) -> list[MemoryRows]:
        """``count`` segments, with repeats only when the pool is smaller than ``count``; the first ``whole`` of
        them read whole (every token's states), as a question's irrelevant whole segments are at answer time.

        With ``question`` and ``candidates``, each whole one is the best BM25 match for the question among
        ``candidates`` random segments: the product reads a question's top segments whole, so an irrelevant
        one it reads shares the question's words ("key" for a pass key), not a random one.
        """
        picks = rng.sample(range(len(self)), count) if count <= len(self) else [rng.randrange(len(self)) for _ in range(count)]
        if question and candidates:
            for n in range(min(whole, count)):
                picks[n] = self.best_match(rng, question, candidates)
        return [self.whole(i) if n < whole else self.slots(i) for n, i in enumerate(picks)]

    def best_match(self, rng: random.Random, question: str, candidates: int) -> int:
        """The segment BM25 ranks highest for ``question`` among ``candidates`` random ones (the first on ties)."""
        if self.texts is None:
            self.texts = [self.model.tokenizer.decode(ids.tolist()) for ids in self.segments]
        drawn = rng.sample(range(len(self)), min(candidates, len(self)))
        scores = bm25_scores(question, [self.texts[i] for i in drawn])
        return drawn[best_first(scores, 1)[0]]

    @torch.no_grad()
    def whole(self, index: int) -> MemoryRows:
        """Segment ``index``'s every token [1, L, M, d] (not cached: 26 MB a segment for SmolLM2), beside its
        slots when the adapter keeps them (``whole_beside``)."""
        rows = whole_rows(self.model, [self.segments[index][None].to(self.model.device)])
        return MemoryRows.beside(self.slots(index), rows) if self.model.config.whole_beside else rows

    @torch.no_grad()
    def slots(self, index: int) -> MemoryRows:
        """Segment ``index``'s rows [1, K, M, d], at positions relative to the segment's end."""
        if index not in self.cache:
            ids = self.segments[index][None].to(self.model.device)
            compressed = self.model.compress_layer_segments([ids])
            self.cache[index] = MemoryRows(compressed.slots, compressed.centres - ids.shape[1], ids.shape[1])
        return self.cache[index]


def surround(
    rows: MemoryRows,
    before: list[MemoryRows],
    after: list[MemoryRows],
    model: LCIRCModel | None = None,
    query_ids: torch.Tensor | None = None,
) -> MemoryRows:
    """An example's memory rows [1, N, M, d] with distractor segments read before and after its text (the
    training-only salience scores of its own tokens are kept).

    With a QD ``model`` every row, distractors included, is scored for the question ``query_ids`` (what
    ``LCIRCModel.slot_bias`` does for a stored memory: an uncorrected slot's latent is its first-layer state),
    so the relevance scorer learns to pick the evidence out of the haystack.
    """
    joined = MemoryRows.concat([*before, rows, *after], batched=True)
    bias = None if model is None else model.question_bias(joined.features[:, :, 0], query_ids)
    return dataclasses.replace(joined, token_scores=rows.token_scores, bias=bias)
