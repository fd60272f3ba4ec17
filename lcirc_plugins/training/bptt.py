"""Back-propagation through the compression recurrence: full, truncated and selective state BPTT.

Full BPTT keeps the graph of every step (exact, memory grows with the number of segments S). Truncated
keeps gradients through the last ``window`` steps. Selective state BPTT (LCIRC section 3.4) keeps them
through a random subset of ``window`` steps. Steps outside the chosen set run under ``no_grad``: their
outputs enter the memory as constants and the recurrence is cut there, which is what bounds the memory
of training.
"""

from __future__ import annotations

import random

import torch
from torch.utils.checkpoint import checkpoint

from ..model.lcirc_model import LCIRCModel
from ..model.memory import MemoryRows

BPTT_MODES = ("full", "truncated", "selective")


def steps_with_gradient(num_steps: int, mode: str, window: int, rng: random.Random) -> set[int]:
    """Indices of the compression steps that keep their graph."""
    if mode not in BPTT_MODES:
        raise ValueError(f"bptt mode must be one of {BPTT_MODES}, got {mode!r}")
    if mode == "full" or window >= num_steps:
        return set(range(num_steps))
    if mode == "truncated":
        return set(range(num_steps - window, num_steps))
    # Selective, without replacement (the authors' code draws with replacement): exactly `window` distinct steps.
    return set(rng.sample(range(num_steps), window))


def compress_for_training(
    model: LCIRCModel,
    segments: list[torch.Tensor],
    grad_steps: set[int],
    query_ids: torch.Tensor | None = None,
    gradient_checkpointing: bool = False,
    whole: bool = False,
) -> torch.Tensor | MemoryRows:
    """Run the recurrence over token-id segments [B, L_i]; returns the memory [B, S*K, d] (paper reader), or
    the layer reader's slots [B, N, M, d] with their positions before the decoder input (every token's states
    when ``whole``: how the question's most relevant segments are read at answer time).

    Only steps in ``grad_steps`` record a graph; with ``gradient_checkpointing`` each of them is
    recomputed in the backward pass instead of keeping its activations.
    """
    compressor = model.adapter.compressor
    query_kv = model.question_kv(query_ids)
    read_whole = whole_rows(model, segments, query_kv) if whole and model.adapter.reads_layers else None
    if read_whole is not None and not model.config.whole_beside:  # in place of the slots
        return read_whole
    if model.adapter.reads_layers:  # per-layer slots; the frozen forward over each segment needs no graph
        slots, centres, latents, scores = model.compress_layer_segments(segments, grad_steps=grad_steps)
        span = sum(ids.shape[1] for ids in segments)
        bias = None
        if compressor.query_mixer is not None:  # QD: the question scores the slots
            bias = compressor.slot_bias(compressor.slot_latents(latents, [ids.shape[1] for ids in segments], slots), query_kv)
        rows = MemoryRows(slots, centres - span, span, bias, token_scores=scores)
        return rows if read_whole is None else MemoryRows.beside(rows, read_whole)  # for the whole reader

    def step(state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return compressor.step(state, compressor.segment_features(model.embed_tokens(ids)), None, query_kv)

    state = compressor.initial_state(segments[0].shape[0])
    outputs = []
    for i, ids in enumerate(segments):
        if i not in grad_steps:
            with torch.no_grad():
                state = step(state, ids)
        elif gradient_checkpointing:
            state = checkpoint(step, state, ids, use_reentrant=False)
        else:
            state = step(state, ids)
        outputs.append(state)
    return torch.cat(outputs, dim=1)


def whole_rows(model: LCIRCModel, segments: list[torch.Tensor], query_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> MemoryRows:
    """Layer-reader rows of every token of ``segments`` [B, L_i] at their positions before the decoder input
    (flagged for the whole reader when the adapter has one)."""
    states = torch.cat([model.segment_states(ids) for ids in segments], dim=1)  # (B, span, M, d), no graph
    span = states.shape[1]
    positions = (torch.arange(span, device=states.device, dtype=torch.float32) - span).expand(states.shape[0], -1)
    bias = model.adapter.compressor.slot_bias(states[:, :, 0], query_kv)
    whole = torch.ones(positions.shape, dtype=torch.bool, device=states.device) if model.config.whole_reader else None
    return MemoryRows(states, positions, span, bias, whole=whole)
