"""The Perceiver that compresses one segment into K vectors (LCIRC section 3.1).

Each layer: the latents cross-attend to the segment's features (and, as in Flamingo's Perceiver
Resampler, to themselves), then a feed-forward block; pre-norms and residuals; a final LayerNorm.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import CrossAttention, FeedForward


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, head_dim: int, ffn_mult: float, self_attend: bool) -> None:
        super().__init__()
        self.self_attend = self_attend
        self.latent_norm = nn.LayerNorm(dim, bias=False)
        self.input_norm = nn.LayerNorm(dim, bias=False)
        self.attn = CrossAttention(dim, dim, head_dim)
        self.ffn_norm = nn.LayerNorm(dim, bias=False)
        self.ffn = FeedForward(dim, ffn_mult)

    def forward(
        self,
        latents: torch.Tensor,
        inputs: torch.Tensor,
        input_mask: torch.Tensor | None,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``latents`` [B, K, d], ``inputs`` [B, L, d], ``input_mask`` [B, L] (True = real token).

        ``weights``, when a list, receives this layer's attention of each latent over the inputs, [B, K, L].
        """
        normed = self.latent_norm(latents)
        context = self.input_norm(inputs)
        probs: list[torch.Tensor] | None = [] if weights is not None else None
        if self.attn.absorbs_context(latents.shape[1]):
            own = self.attn.project_context(normed) if self.self_attend else None
            latents = latents + self.attn.attend_absorbed(normed, context, input_mask, own, probs)
        else:
            latents = latents + self._attend_projected(normed, context, input_mask, probs)
        if weights is not None:  # provenance: how much each latent read each input token, averaged over heads
            weights.append(probs[0].mean(dim=1))
        return latents + self.ffn(self.ffn_norm(latents))

    def _attend_projected(
        self, normed: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None, probs: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """Cross-attention over projected inputs (and latents), for many latents, where absorbing would cost more."""
        num_inputs = context.shape[1]
        if self.self_attend:
            context = torch.cat([context, normed], dim=1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], normed.shape[1])], dim=1)
        kv = self.attn.project_context(context)
        if probs is not None:
            probs.append(self.attn.weights(normed, kv, mask)[..., :num_inputs])
        return self.attn(normed, kv, mask)


class Perceiver(nn.Module):
    """``(queries [B, K, d], inputs [B, L, d]) -> [B, K, d]``."""

    def __init__(self, dim: int, num_layers: int, head_dim: int, ffn_mult: float, self_attend: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PerceiverLayer(dim, head_dim, ffn_mult, self_attend) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim, bias=False)

    def forward(
        self,
        queries: torch.Tensor,
        inputs: torch.Tensor,
        input_mask: torch.Tensor | None = None,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        latents = queries
        for layer in self.layers:
            latents = layer(latents, inputs, input_mask, weights)
        return self.norm(latents)
