"""Recurrent context compression (LCIRC section 3.1) and its query-dependent variant (section 3.3).

``h(0)`` is K learned vectors; step ``i`` computes ``h(i) = Perceiver(h(i-1), s_i)`` where ``s_i`` is the
segment's frozen token embeddings plus a learned in-segment position table (positions restart in every
segment). The memory is ``[h(1); ...; h(S)]`` plus a learned segment-order signal. In QD mode a gated
cross-attention "mixer" lets the latents read the question's embeddings before every step, so what is
kept depends on the question.

The stored memory holds the raw ``h(i)``; the order signal is added by :meth:`memory_states` when the
memory is injected. That keeps the last ``K`` rows usable as the recurrent state, so appending text
simply continues the recurrence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .attention import CrossAttention, FeedForward
from .config import LCIRCConfig
from .gated_cross_attention import GatedCrossAttentionBlock
from .perceiver import Perceiver

Embed = Callable[[torch.Tensor], torch.Tensor]


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sine/cosine features of integer positions, [N] -> [N, dim]; unbounded, unlike a learned table."""
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)
    angles = positions.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SegmentEncoderLayer(nn.Module):
    """Pre-norm self-attention and MLP over one segment's tokens, so each token's feature carries its context.

    Why: raw token embeddings say nothing about neighbours, so a latent cannot tell the digits of a pass key
    from other digits. The output projections start at zero, so a new layer is the identity.
    """

    def __init__(self, dim: int, head_dim: int, ffn_mult: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, bias=False)
        self.attn = CrossAttention(dim, dim, head_dim)
        self.ffn_norm = nn.LayerNorm(dim, bias=False)
        self.ffn = FeedForward(dim, ffn_mult)
        nn.init.zeros_(self.attn.to_out.weight)
        nn.init.zeros_(self.ffn.down.weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, L, d], ``mask`` [B, L] (True = real token; padding is never attended to)."""
        normed = self.attn_norm(x)
        x = x + self.attn(normed, self.attn.project_context(normed), mask)
        return x + self.ffn(self.ffn_norm(x))


class RecurrentCompressor(nn.Module):
    def __init__(self, dim: int, config: LCIRCConfig) -> None:
        super().__init__()
        self.num_latents = config.num_latents
        self.order_dim = config.order_dim
        self.initial_latents = nn.Parameter(torch.randn(config.num_latents, dim) * 0.02)
        self.segment_positions = nn.Embedding(config.max_segment_len, dim)
        nn.init.normal_(self.segment_positions.weight, std=0.02)
        self.segment_encoder = nn.ModuleList(
            SegmentEncoderLayer(dim, config.head_dim, config.ffn_mult) for _ in range(config.segment_encoder_layers)
        )
        self.perceiver = Perceiver(dim, config.perceiver_layers, config.head_dim, config.ffn_mult, config.perceiver_self_attend)
        # Books run to thousands of segments, so the order signal is a learned projection of sinusoids
        # rather than a table with a maximum length.
        self.order_proj = nn.Linear(config.order_dim, dim, bias=False)
        nn.init.normal_(self.order_proj.weight, std=0.02)
        self.query_mixer = (
            GatedCrossAttentionBlock(dim, dim, config.head_dim, config.ffn_mult, config.gate_init)
            if config.query_dependent
            else None
        )

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """``h(0)`` for a batch: [B, K, d]."""
        return self.initial_latents.unsqueeze(0).expand(batch_size, -1, -1)

    def segment_features(self, token_embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frozen token embeddings [B, L, d] plus in-segment positions (so token order survives), then the
        optional segment encoder (``mask`` [B, L] marks real tokens)."""
        positions = torch.arange(token_embeds.shape[1], device=token_embeds.device)
        features = token_embeds + self.segment_positions(positions)
        for layer in self.segment_encoder:
            features = layer(features, mask)
        return features

    def project_query(self, query_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys/values of the question for the QD mixer, computed once per compression."""
        return None if self.query_mixer is None else self.query_mixer.project_memory(query_embeds)

    def step(
        self,
        state: torch.Tensor,
        segment: torch.Tensor,
        segment_mask: torch.Tensor | None = None,
        query_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        query_mask: torch.Tensor | None = None,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One recurrence step: ``h(i-1)`` [B, K, d] and segment features [B, L, d] -> ``h(i)`` [B, K, d].

        ``weights``, when a list, receives each Perceiver layer's latent-over-token attention [B, K, L].
        """
        if query_kv is not None and self.query_mixer is not None:
            state = self.query_mixer(state, query_kv, query_mask)
        return self.perceiver(state, segment, segment_mask, weights)

    def order_signal(self, num_segments: int, start: int = 0, device: torch.device | None = None) -> torch.Tensor:
        """Learned segment-order vectors for segments ``start .. start+num_segments-1``: [S, d]."""
        index = torch.arange(start, start + num_segments, device=device)
        return self.order_proj(sinusoid(index, self.order_dim).to(self.order_proj.weight.dtype))

    def memory_states(self, features: torch.Tensor) -> torch.Tensor:
        """What the decoder attends to: raw memory [..., S*K, d] plus each segment's order vector."""
        num_segments = features.shape[-2] // self.num_latents
        order = self.order_signal(num_segments, device=features.device).repeat_interleave(self.num_latents, dim=0)
        return features + order.to(features.dtype)

    def compress(
        self,
        embed: Embed,
        sequences: list[torch.Tensor],
        segment_len: int,
        states: torch.Tensor | None = None,
        query_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        query_mask: torch.Tensor | None = None,
        on_segment: Callable[[int], None] | None = None,
    ) -> list[torch.Tensor]:
        """Run the recurrence over a batch of token sequences of any lengths.

        Args:
            embed: maps token ids [B, L] to frozen embeddings [B, L, d] (the backbone's input table).
            sequences: one 1-D LongTensor of token ids per item; each is cut into ``segment_len`` pieces.
            states: starting states [B, K, d] (``h(0)`` when None), to continue an earlier compression.
            query_kv, query_mask: the question for QD compression (from :meth:`project_query`).
            on_segment: called with the number of tokens just compressed (progress bars).

        Returns:
            One tensor [S_b * K, d] per item. Items with fewer segments drop out of later steps, and a
            short last segment is padded and masked, so batching never changes an item's result.
        """
        batch = len(sequences)
        state = self.initial_state(batch) if states is None else states
        num_segments = [math.ceil(len(s) / segment_len) for s in sequences]
        k = self.num_latents
        # Preallocated outputs: the only tensors that grow with the input are the memory itself.
        outputs = [state.new_empty(n * k, state.shape[-1]) for n in num_segments]
        for i in range(max(num_segments, default=0)):
            active = [b for b in range(batch) if num_segments[b] > i]
            pieces = [sequences[b][i * segment_len : (i + 1) * segment_len] for b in active]
            ids, mask = _pad(pieces)
            segment = self.segment_features(embed(ids), mask)
            kv = None if query_kv is None else (query_kv[0][active], query_kv[1][active])
            qmask = None if query_mask is None else query_mask[active]
            new = self.step(state[active], segment, mask, kv, qmask)
            if len(active) < batch:
                state = state.clone()
                state[active] = new
            else:
                state = new
            for row, b in enumerate(active):
                outputs[b][i * k : (i + 1) * k] = new[row]
            if on_segment is not None:
                on_segment(sum(len(p) for p in pieces))
        return outputs


def _pad(pieces: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack token pieces into [B, L_max]; the mask is None when nothing needed padding."""
    pieces = list(pieces)
    longest = max(len(p) for p in pieces)
    if all(len(p) == longest for p in pieces):
        return torch.stack(pieces), None
    ids = pieces[0].new_zeros(len(pieces), longest)
    mask = torch.zeros(len(pieces), longest, dtype=torch.bool, device=ids.device)
    for row, piece in enumerate(pieces):
        ids[row, : len(piece)] = piece
        mask[row, : len(piece)] = True
    return ids, mask
