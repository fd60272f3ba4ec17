"""The two building blocks every adapter module shares: multi-head cross-attention and a SiLU MLP.

Bias-free, no dropout (the authors' choice); attention runs through ``scaled_dot_product_attention`` so
CPU and GPU kernels are picked by torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttention(nn.Module):
    """Queries from ``x`` attend to keys/values from ``context``.

    Keys and values are projected by :meth:`project_context` separately from the attention itself, so a
    fixed context (the memory during decoding) is projected once per call and reused at every step.
    """

    def __init__(self, dim: int, context_dim: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = max(1, dim // head_dim)
        self.head_dim = head_dim
        inner = self.num_heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``context`` [B, N, C] -> keys and values [B, heads, N, head_dim]."""
        b, n, _ = context.shape
        k, v = self.to_kv(context).view(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def _heads(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], context_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-head queries, keys and values for a batch of ``x`` (one memory may serve the whole batch), and the mask."""
        b, t, _ = x.shape
        q = self.to_q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = kv
        if k.shape[0] != b:  # one memory shared by a batch of prompts
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        mask = None if context_mask is None else context_mask[:, None, None, :].expand(b, 1, 1, -1)
        return q, k, v, mask

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` [B, T, dim], ``kv`` from :meth:`project_context`, ``context_mask`` [B, N] (True = attend)."""
        q, k, v, mask = self._heads(x, kv, context_mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))

    def weights(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The attention probabilities ``forward`` uses, [B, heads, T, N], computed explicitly (provenance only)."""
        q, k, _, mask = self._heads(x, kv, context_mask)
        scores = q @ k.transpose(-1, -2) / self.head_dim**0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=-1)


class FeedForward(nn.Module):
    """Two-layer SiLU MLP of width ``mult * dim``."""

    def __init__(self, dim: int, mult: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mult))
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(x)))
