"""Distractor segments: plain book text whose memory is computed once and read around each training example.

Why: without slot correction the layer reader compresses every segment on its own, so a book's memory is the
concatenation of its segments' slots, and what grows with the book is what the reader must look past: more
slots, at positions further back. An 8K-32K-token training example would cost a frozen forward over all of it
at every step. Drawing the other segments from a pool of plain book segments, each compressed once, gives the
reader the same haystack at the cost of the example's own segments. The teacher and the salience target see
only the example's own text (it holds the answer); distractors add no loss, only rows to look past.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..errors import ConfigError, LCIRCError
from ..model.lcirc_model import LCIRCModel
from ..model.memory import MemoryRows
from .data import iter_records


@dataclass
class SegmentSlots:
    """One compressed segment: slots [1, K, M, d], their positions from the segment's start [1, K], its length."""

    slots: torch.Tensor
    centres: torch.Tensor
    length: int


class DistractorPool:
    """Up to ``size`` full segments of plain text, shuffled once; each is compressed the first time it is drawn.

    Slots are cached as the salience scorer selected them then: a distractor can lag the scorer by some steps,
    which only changes which plain-text tokens the reader must ignore.
    """

    def __init__(self, model: LCIRCModel, source: str, size: int, seed: int) -> None:
        compressor = model.adapter.compressor
        if not model.adapter.reads_layers or getattr(compressor, "corrected", False) or compressor.query_mixer is not None:
            raise ConfigError(
                "distractor segments need a memory whose segments are compressed independently: "
                "the layer reader without slot_correction and without query_dependent"
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
        self.cache: dict[int, SegmentSlots] = {}

    def __len__(self) -> int:
        return len(self.segments)

    def draw(self, rng: random.Random, count: int) -> list[SegmentSlots]:
        """``count`` segments, with repeats only when the pool is smaller than ``count``."""
        picks = rng.sample(range(len(self)), count) if count <= len(self) else [rng.randrange(len(self)) for _ in range(count)]
        return [self.slots(i) for i in picks]

    @torch.no_grad()
    def slots(self, index: int) -> SegmentSlots:
        if index not in self.cache:
            ids = self.segments[index][None].to(self.model.device)
            compressed = self.model.compress_layer_segments([ids])
            self.cache[index] = SegmentSlots(compressed.slots, compressed.centres, ids.shape[1])
        return self.cache[index]


def surround(rows: MemoryRows, before: list[SegmentSlots], after: list[SegmentSlots]) -> MemoryRows:
    """An example's memory rows [B, N, M, d] with distractor segments read before and after its text.

    Positions stay relative to the prompt: the example's own rows move back by the length of what follows
    them, and every segment keeps its tokens' places in the text so formed.
    """
    if rows.bias is not None:
        raise ConfigError("distractor segments cannot carry a QD slot bias")
    if not before and not after:
        return rows
    batch = rows.features.shape[0]
    own_centres = rows.positions + rows.span  # positions from the start of the example's own text
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    offset = 0
    for segment in before:
        parts.append((segment.slots, segment.centres + offset))
        offset += segment.length
    parts.append((rows.features, own_centres + offset))
    offset += rows.span
    for segment in after:
        parts.append((segment.slots, segment.centres + offset))
        offset += segment.length
    features = torch.cat([f.to(rows.features).expand(batch, *f.shape[1:]) for f, _ in parts], dim=1)
    positions = torch.cat([c.to(rows.positions).expand(batch, -1) for _, c in parts], dim=1) - offset
    return MemoryRows(features, positions, offset, None, token_scores=rows.token_scores)
