"""Where an answer came from, read off the adapter's own weights.

Two attention maps, chained: the gated cross-attention says how much the decoder read each memory vector
while producing the answer (each layer's mass weighted by ``|tanh(gate)|``, so a closed gate counts for
nothing), and the compressor's Perceiver says which tokens of a segment each of its latents read. Their
product ranks the tokens of the book; the best window of consecutive tokens in a well-read segment is the
quote, mapped back to characters through the memory's segment spans.

:func:`answer_provenance` is what every front end calls (``LCIRCModel.provenance``): the passages behind one
prepared answer over all the memories it read, by attention, or by BM25 over the passages when every gate is
closed (an untrained adapter reads nothing, so only word overlap can point at a source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .memory import CompressedMemory, MemoryRows
from .passages import bm25_scores, passages, rank_passages

if TYPE_CHECKING:
    from .lcirc_model import PreparedPrompt


@dataclass
class Evidence:
    """A quoted window of one compressed segment, with the attention mass the answer put on it."""

    segment: int
    start: int  # character offsets in the book
    end: int
    weight: float  # share of the answer's memory attention on this segment (sums to 1 over all segments)
    text: str


@torch.no_grad()
def attention_by_token(model, input_ids: torch.Tensor, rows: MemoryRows | torch.Tensor) -> torch.Tensor:
    """Attention mass each token of ``input_ids`` [1, T] put on each memory row over one forward pass, [T, N]
    (summed over the GCA layers, each weighted by ``|tanh(gate)|``).

    Zero everywhere when every gate is closed (an untrained adapter reads nothing from the memory).
    """
    batch = model.memory_states(rows)
    with model.injector.conditioned(*batch, record_attention=True) as state:
        model.backbone(input_ids=input_ids.to(model.device))
    if not state.attention:
        return torch.zeros(input_ids.shape[1], batch.states.shape[1])
    return torch.stack(list(state.attention.values())).sum(dim=0)[0].float().cpu()


def memory_attention(model, input_ids: torch.Tensor, rows: MemoryRows | torch.Tensor) -> torch.Tensor:
    """Attention mass on each memory row [N], averaged over the tokens of ``input_ids`` (prompt + answer)."""
    return attention_by_token(model, input_ids, rows).mean(dim=0)


def answer_reading(model, prompt_ids: torch.Tensor, answer_ids: torch.Tensor, rows: MemoryRows | torch.Tensor) -> torch.Tensor:
    """What the answer read from each memory row [N], beyond what its prompt read.

    Why the contrast (docs/TRAINING_FINDINGS.md, "Provenance"): most of the readers' attention goes to the same
    few rows whatever is asked (sinks), for the prompt's tokens and the answer's alike, so the raw mass ranks
    those rows first; what the answer's tokens (from the last prompt token, which predicts the first) read *more*
    than the prompt's did is the evidence. The same contrast trains the salience scorer. Falls back to the raw
    answer mass when the contrast is empty, and to the prompt's when there is no answer.
    """
    by_token = attention_by_token(model, torch.cat([prompt_ids, answer_ids], dim=1), rows)  # one forward
    first = prompt_ids.shape[1] - 1
    if not answer_ids.shape[1]:
        return by_token.mean(dim=0)
    answer = by_token[first:].mean(dim=0)
    if first < 1:
        return answer
    contrast = (answer - by_token[:first].mean(dim=0)).clamp(min=0)
    return contrast if float(contrast.sum()) > 0 else answer


def segment_weights(memory: CompressedMemory, row_weights: torch.Tensor) -> torch.Tensor:
    """Row weights [N] summed per segment, [S]."""
    return torch.zeros(memory.num_segments).index_add_(0, memory.segment_of_rows(), row_weights.float())


@torch.no_grad()
def token_attention(
    model,
    memory: CompressedMemory,
    features: torch.Tensor,
    segment: int,
    latent_weights: torch.Tensor,
    question: str | None = None,
) -> torch.Tensor:
    """How much the answer relied on each token of ``segment``: latent weights x the Perceiver's attention.

    The step is recomputed from the previous segment's latents in ``features`` (the QD features when the
    answer read QD features), so the map is the one the memory was made with.
    """
    if memory.reads_layers:  # a slot holds its window of tokens: spread its weight over them
        return _window_attention(model, memory, segment, latent_weights)
    compressor, k = model.adapter.compressor, memory.num_latents
    ids = memory.segment_token_ids(segment).long()[None].to(model.device)
    dtype = compressor.initial_latents.dtype
    state = (
        compressor.initial_state(1) if segment == 0 else features[(segment - 1) * k : segment * k][None].to(model.device, dtype)
    )
    query_kv = model.question_kv(question or None)
    layers: list[torch.Tensor] = []
    compressor.step(state, compressor.segment_features(model.embed_tokens(ids)), None, query_kv, weights=layers)
    per_latent = torch.stack(layers).mean(dim=0)[0].float().cpu()  # [K, L]
    return latent_weights.float() @ per_latent


def _window_attention(model, memory: CompressedMemory, segment: int, slot_weights: torch.Tensor) -> torch.Tensor:
    """Token weights of a layer-memory segment: a selected slot's weight on its own token, a pooled slot's spread
    evenly over its window."""
    length = len(memory.segment_token_ids(segment))
    if model.config.slot_selection:  # a slot is the exact states of one token, kept at that token's position
        rows = memory.segment_of_rows() == segment
        tokens = (memory.positions[rows].long() - segment * memory.segment_len).clamp(0, length - 1)
        return torch.zeros(length).index_add_(0, tokens, slot_weights.float())
    width = model.config.tokens_per_slot
    slot_of_token = torch.arange(length) // width
    return slot_weights.float()[slot_of_token] / width


def best_window(weights: torch.Tensor, width: int) -> tuple[int, int]:
    """``[start, end)`` of the ``width`` consecutive tokens with the largest total weight."""
    width = min(width, len(weights))
    sums = torch.nn.functional.avg_pool1d(weights[None, None], width, stride=1)[0, 0]
    start = int(sums.argmax())
    return start, start + width


def evidence(
    model,
    memory: CompressedMemory,
    features: torch.Tensor,
    vector_weights: torch.Tensor,
    top_k: int = 3,
    window_tokens: int = 48,
    question: str | None = None,
) -> list[Evidence]:
    """The ``top_k`` most-read segments of ``memory``, each quoted at its most-read window of tokens."""
    per_segment = segment_weights(memory, vector_weights)
    rows_of = memory.segment_of_rows()
    total = float(per_segment.sum())
    if total <= 0:
        return []
    found = []
    for segment in per_segment.argsort(descending=True)[:top_k].tolist():
        tokens = token_attention(model, memory, features, segment, vector_weights[rows_of == segment], question)
        start, end = best_window(tokens, window_tokens)
        ids = memory.segment_token_ids(segment).tolist()
        decode = model.tokenizer.decode
        seg_start, seg_end = (int(x) for x in memory.spans[segment])
        # Character offsets from decoded lengths: exact for byte-level BPE tokenizers, close for the others.
        char_start = min(seg_start + len(decode(ids[:start])), seg_end)
        text = decode(ids[start:end])
        found.append(
            Evidence(segment, char_start, min(char_start + len(text), seg_end), float(per_segment[segment]) / total, text)
        )
    return found


@dataclass(frozen=True)
class SourcePassage:
    """A passage behind an answer: ``source`` indexes the memories the answer read (``PreparedPrompt.sources``)."""

    source: int
    segment: int
    start: int  # character offsets in that memory's text
    end: int
    text: str
    score: float  # attention share of the answer (``method == "attention"``) or BM25 score


@dataclass
class Provenance:
    """Where an answer came from: the best passages over all its memories, and every segment's score (plots)."""

    method: str  # "attention", "bm25", or "none" (the answer read no memory)
    passages: list[SourcePassage] = field(default_factory=list)
    segment_scores: list[torch.Tensor] = field(default_factory=list)  # per source memory, [S]


def answer_provenance(model, prepared: PreparedPrompt, answer: str, top_k: int = 3) -> Provenance:
    """The ``top_k`` passages ``answer`` read most over ``prepared.sources`` (BM25 for the question when gates are closed)."""
    if not prepared.sources:
        return Provenance("none")
    answer_ids = model.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
    weights = answer_reading(model, prepared.input_ids, answer_ids, prepared.rows)
    total = float(weights.sum())
    if total <= 0:
        return _bm25_provenance(model, prepared.sources, prepared.question or "", top_k)
    found, scores, offset = [], [], 0
    for index, memory in enumerate(prepared.sources):  # the sources' rows come first, in order
        share = weights[offset : offset + len(memory.features)]
        offset += len(memory.features)
        for e in evidence(model, memory, memory.features, share, top_k=top_k, question=prepared.question):
            found.append(SourcePassage(index, e.segment, e.start, e.end, e.text, e.weight * float(share.sum()) / total))
        scores.append(segment_weights(memory, share) / total)
    found.sort(key=lambda p: -p.score)
    return Provenance("attention", found[:top_k], scores)


def _bm25_provenance(model, sources: tuple[CompressedMemory, ...], question: str, top_k: int) -> Provenance:
    found, scores = [], []
    for index, memory in enumerate(sources):
        for p in rank_passages(memory, model.tokenizer, question, top_k=top_k):
            found.append(SourcePassage(index, p.segment, p.start, p.end, p.text, p.score))
        scores.append(torch.tensor(bm25_scores(question, [p.text for p in passages(memory, model.tokenizer)])))
    found.sort(key=lambda p: -p.score)
    return Provenance("bm25", [p for p in found if p.score > 0][:top_k], scores)  # sharing no word is no evidence
