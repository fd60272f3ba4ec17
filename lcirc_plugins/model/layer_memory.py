"""Compression that stays in the reader's space: ordered slots per segment, per memory layer.

For the "layer" reader (``layer_reader.py``) each memory layer j reads states in its own normed input space,
taken from one frozen forward over the segment (``LCIRCModel.segment_states``). This module turns a segment's
states [B, L, M, d] (M memory layers) into K slots per layer:

    slot_k^j = pool_k^j + tanh(g) * (sum_t a_kt s_t^j - pool_k^j)

``pool_k`` is the mean of the k-th window of ``tokens_per_slot`` consecutive tokens, so slot order follows text
order and each slot sits at its window's centre position; a corrected slot's position moves the same way, to
the mean position of what it reads (so the order of what the slots picked out survives in RoPE).

Query dependence (QD-LCIRC) must not cost a new forward over the book, so the memory keeps each slot's latent
and the QD mixer re-reads only those: they read the question and score each slot's relevance, a bias on the
readers' attention logits (:meth:`LayerMemoryCompressor.slot_bias`). The correction is the method's recurrence (LCIRC
section 3.1): latents ``h(i) = Perceiver(h(i-1), x_i)`` read the segment (its first memory layer's states plus
in-segment positions), and latent k's read-out attention ``a_k`` over the tokens says what slot k holds instead.
One attention map serves every layer, so each slot stays a mixture of that layer's own states. The gate ``g``
starts at 0: at initialisation the slots are exactly the pooled windows. With ``tokens_per_slot = 1`` and no
correction the memory is the uncompressed states (rung R0).

``slot_selection`` replaces pooling by selection: a segment keeps the exact states of its K most salient
tokens, at their own positions, so the order of what is kept is never blurred. A linear scorer on one memory
layer's states (``salience_layer``, by default the one nearest the backbone's middle) ranks the tokens,
trained to match where the backbone reads when it answers with the text in its window, more than when it
reads the prompt (``TrainConfig.salience_distill``, ``training.trainer.attention_to_context``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import CrossAttention
from .config import LCIRCConfig
from .gated_cross_attention import GatedCrossAttentionBlock
from .perceiver import Perceiver


def pool_windows(states: torch.Tensor, mask: torch.Tensor | None, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each run of ``window`` tokens: [B, L, M, d] -> slots [B, K, M, d] and their centres [B, K].

    ``mask`` [B, L] marks real tokens (padding never enters a mean); K = ceil(L / window). Centres are the mean
    in-segment position of the real tokens in the window (a window with none gets position 0 and zeros).
    """
    b, length = states.shape[:2]
    slots = math.ceil(length / window)
    pad = slots * window - length
    real = torch.ones(b, length, dtype=states.dtype, device=states.device) if mask is None else mask.to(states.dtype)
    if pad:
        states = torch.nn.functional.pad(states, (0, 0, 0, 0, 0, pad))
        real = torch.nn.functional.pad(real, (0, pad))
    weights = real.view(b, slots, window)  # (B, K, W)
    counts = weights.sum(-1).clamp(min=1.0)
    grouped = states.view(b, slots, window, *states.shape[2:])  # (B, K, W, M, d)
    pooled = torch.einsum("bkw,bkwmd->bkmd", weights, grouped) / counts[..., None, None]
    positions = torch.arange(slots * window, device=states.device, dtype=torch.float32).view(1, slots, window)
    centres = (weights.float() * positions).sum(-1) / counts.float()
    return pooled, centres


def select_tokens(states: torch.Tensor, scores: torch.Tensor, tokens_per_slot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The K = ceil(L / tokens_per_slot) highest-scoring tokens of a segment, kept in text order.

    [B, L, M, d] states and [B, L] scores -> slots [B, K, M, d] (exact token states) and their positions [B, K].
    """
    k = math.ceil(states.shape[1] / tokens_per_slot)
    chosen = scores.topk(k, dim=1).indices.sort(dim=1).values  # (B, K), in text order
    slots = states.gather(1, chosen[:, :, None, None].expand(-1, -1, *states.shape[2:]))
    return slots, chosen.float()


def slots_in(num_tokens: int, segment_len: int, tokens_per_slot: int) -> int:
    """How many slots a text of ``num_tokens`` gets when cut into ``segment_len`` segments."""
    full, rest = divmod(num_tokens, segment_len)
    return full * math.ceil(segment_len / tokens_per_slot) + math.ceil(rest / tokens_per_slot)


class LayerMemoryCompressor(nn.Module):
    """Segment states [B, L, M, d] -> slots [B, K, M, d], with the recurrent latents as the carried state."""

    def __init__(self, dim: int, config: LCIRCConfig) -> None:
        super().__init__()
        self.tokens_per_slot = config.tokens_per_slot
        self.num_latents = math.ceil(config.max_segment_len / config.tokens_per_slot)  # latent k owns window k
        self.corrected = config.slot_correction
        self.salience = nn.Linear(dim, 1) if config.slot_selection else None
        self.salience_index = config.gca_layers.index(config.salience_layer) if config.slot_selection else 0
        self.query_mixer = None
        if config.query_dependent:  # QD: the question re-reads what the memory stores of each slot, never the book
            self.query_mixer = GatedCrossAttentionBlock(dim, dim, config.head_dim, config.ffn_mult, config.gate_init)
            self.relevance = nn.Linear(dim, 1, bias=False)
            nn.init.zeros_(self.relevance.weight)
        if not self.corrected:
            return
        self.initial_latents = nn.Parameter(torch.randn(self.num_latents, dim) * 0.02)
        self.segment_positions = nn.Embedding(config.max_segment_len, dim)
        nn.init.normal_(self.segment_positions.weight, std=0.02)
        self.perceiver = Perceiver(dim, config.perceiver_layers, config.head_dim, config.ffn_mult, config.perceiver_self_attend)
        self.readout = CrossAttention(dim, dim, dim)  # one head: latent k's attention over the tokens
        self.slot_gate = nn.Parameter(torch.zeros(1))

    def initial_state(self, batch_size: int) -> torch.Tensor | None:
        """``h(0)`` for a batch, [B, K_lat, d]; None when there is no recurrence (pooling alone)."""
        return self.initial_latents.unsqueeze(0).expand(batch_size, -1, -1) if self.corrected else None

    def project_query(self, query_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys/values of the question for the QD mixer, computed once per compression."""
        return None if self.query_mixer is None else self.query_mixer.project_memory(query_embeds)

    def scores(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Salience logits of a segment's tokens, [B, L], from the ``salience_layer``'s states (-inf on padding)."""
        scores = self.salience(states[:, :, self.salience_index].to(self.salience.weight.dtype)).squeeze(-1)
        return scores if mask is None else scores.masked_fill(~mask, float("-inf"))

    def slot_latents(self, latents: list[torch.Tensor], lengths: list[int], slots: torch.Tensor) -> torch.Tensor:
        """What QD reads of each slot, [B, N, d]: the latent that made it (slot k of a segment is its latent k)
        or, without a recurrence, the slot's state at the first memory layer."""
        if not latents:
            return slots[:, :, 0]
        counts = [math.ceil(length / self.tokens_per_slot) for length in lengths]
        return torch.cat([state[:, :k] for state, k in zip(latents, counts)], dim=1)

    def slot_bias(
        self,
        slot_latents: torch.Tensor,
        query_kv: tuple[torch.Tensor, torch.Tensor] | None,
        query_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """QD-LCIRC without a new pass over the book: each slot's latent [B, N, d] (:meth:`slot_latents`) reads the
        question (the QD mixer, a GCA block) and scores its slot's relevance, [B, N], added to every reader's
        attention logits.

        Zero at initialisation (closed mixer gate, zero scorer), so an untrained QD adapter reads as without QD.
        """
        if self.query_mixer is None:
            return None
        latents = slot_latents if query_kv is None else self.query_mixer(slot_latents, query_kv, query_mask)
        return self.relevance(latents).squeeze(-1)

    def step(
        self,
        state: torch.Tensor | None,
        states: torch.Tensor,
        mask: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One segment: (``h(i-1)``, states [B, L, M, d]) -> (slots [B, K, M, d], centres [B, K], ``h(i)``).

        The question plays no part here (see :meth:`slot_bias`), so a memory serves every question. ``scores``
        are the salience logits of :meth:`scores` when the caller already has them (slot selection).
        """
        if self.salience is not None:
            scores = self.scores(states, mask) if scores is None else scores
            return (*select_tokens(states, scores, self.tokens_per_slot), state)
        pooled, centres = pool_windows(states, mask, self.tokens_per_slot)
        if not self.corrected or state is None:
            return pooled, centres, state
        x = states[:, :, 0].to(state.dtype)  # (B, L, d): the first memory layer's states
        x = x + self.segment_positions(torch.arange(x.shape[1], device=x.device))
        state = self.perceiver(state, x, mask)
        k = pooled.shape[1]
        read_weights = self.readout.weights(state[:, :k], self.readout.project_context(x), mask)[:, 0]  # (B, K, L)
        read = torch.einsum("bkl,blmd->bkmd", read_weights.to(states.dtype), states)
        gate = torch.tanh(self.slot_gate)
        slots = pooled + gate.to(states.dtype) * (read - pooled)
        # A slot moves to where it reads, so RoPE keeps the order of what the slots picked out.
        read_at = read_weights.float() @ torch.arange(x.shape[1], device=x.device, dtype=torch.float32)
        return slots, centres + gate.float().detach() * (read_at.detach() - centres), state
