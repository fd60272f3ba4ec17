"""Whole segments: the question's most relevant segments read token by token, the rest from their slots.

Why (docs/TRAINING_FINDINGS.md, "Whole segments"): a segment's 16 kept tokens of 512 carry a number, not a name
or a phrase the backbone must copy word for word. A question names what it asks about, so BM25 over the memory's
own segment texts (the token ids a memory keeps anyway) finds the passage that states it, and that segment is read
whole: every token's states at every memory layer, at their own positions, in place of its slots. Segments are
compressed independently, so one frozen forward over the k chosen segments gives exactly the states the build
saw; the cost is bounded by k segments, never the book. This is the layer reader's QD recompression.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from .passages import best_first, bm25_scores


def relevant_segments(
    tokenizer: PreTrainedTokenizerBase, token_ids: torch.Tensor, segment_len: int, question: str, k: int
) -> list[int]:
    """The ``k`` segments of ``token_ids`` that BM25 ranks highest for ``question``, in text order.

    A segment that shares no word with the question is never chosen (it is no evidence).
    """
    return relevant_segments_of_texts(tokenizer, [token_ids], segment_len, question, k)[0]


def relevant_segments_of_texts(
    tokenizer: PreTrainedTokenizerBase, texts: list[torch.Tensor], segment_len: int, question: str, k: int
) -> list[list[int]]:
    """The ``k`` segments of all ``texts`` (token ids each) that BM25 ranks highest for ``question``, as each text's
    chosen segments in text order: k for a question over several books, not k per book (the question step reads k
    segments however many books it spans)."""
    if k <= 0 or not question:
        return [[] for _ in texts]
    owners = [(t, i) for t, ids in enumerate(texts) for i in range(-(-len(ids) // segment_len))]
    pieces = [tokenizer.decode(piece.tolist()) for ids in texts for piece in ids.split(segment_len)]
    scores = bm25_scores(question, pieces)
    chosen: list[list[int]] = [[] for _ in texts]
    for best in best_first(scores, k):
        if scores[best] > 0:
            chosen[owners[best][0]].append(owners[best][1])
    return [sorted(segments) for segments in chosen]


class QuestionRows(NamedTuple):
    """A question's rows [N', M, d] at token positions [N'] (from the text's start), the stored row each one comes
    from (``source`` [N'], -1 on the whole segments' rows) and [N'] True on the rows a whole reader reads (or None
    when the adapter has none)."""

    features: torch.Tensor
    positions: torch.Tensor
    whole: torch.Tensor | None
    source: torch.Tensor


@torch.no_grad()
def with_whole_segments(
    model, token_ids: torch.Tensor, features: torch.Tensor, positions: torch.Tensor, segments: list[int], beside: bool = False
) -> QuestionRows:
    """Layer-memory rows [N, M, d] at token positions [N] (from the text's start) with all of the token states of
    ``segments`` in place of their rows (or ``beside`` every row, for a whole reader); rows stay in text order.

    ``whole`` flags the whole segments' rows.
    """
    length = model.config.segment_len
    kept = torch.ones(len(positions), dtype=torch.bool)
    if not beside:
        kept = ~torch.isin((positions // length).long().cpu(), torch.tensor(segments, dtype=torch.long))
    new_features, new_positions = [features[kept]], [positions[kept]]
    pieces = {s: token_ids[s * length : (s + 1) * length].long() for s in segments}
    for size in sorted({len(p) for p in pieces.values()}):  # full segments in one batch, a short last one alone
        batch = [s for s in segments if len(pieces[s]) == size]
        states = model.segment_states(torch.stack([pieces[s] for s in batch])).to(features.device, features.dtype)
        for s, segment_states in zip(batch, states):
            new_features.append(segment_states)
            new_positions.append(torch.arange(size, dtype=positions.dtype, device=positions.device) + s * length)
    added = sum(len(p) for p in new_positions[1:])
    source = torch.cat([kept.nonzero()[:, 0], torch.full((added,), -1, dtype=torch.long)])
    features, positions = torch.cat(new_features), torch.cat(new_positions)
    order = positions.argsort(stable=True)
    source = source[order.cpu()]
    return QuestionRows(features[order], positions[order], source < 0, source)


def read_whole(
    model, token_ids: torch.Tensor, features: torch.Tensor, positions: torch.Tensor, question: str | None, segments: list[int] | None = None
) -> QuestionRows | None:
    """Rows as ``question`` reads them (``model.config.whole_segments`` of its segments whole, or the given
    ``segments``), or None when it picks none: the one QD recompression of stored memories and of evaluation rows.

    ``whole`` is None without a whole reader (``whole_reader``): then the slots' reader reads the whole rows too.
    """
    config = model.config
    if segments is None:
        segments = relevant_segments(model.tokenizer, token_ids, config.segment_len, question or "", config.whole_segments)
    if not segments:
        return None
    rows = with_whole_segments(model, token_ids, features, positions, segments, config.whole_beside)
    return rows if config.whole_reader else rows._replace(whole=None)
