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

    def absorbs_context(self, num_queries: int) -> bool:
        """Whether :meth:`attend_absorbed` is cheaper than projecting the context: K*H < H*head_dim (= W)."""
        return num_queries < self.head_dim

    def attend_absorbed(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``forward(x, project_context(context))`` without projecting the context.

        Why: a Perceiver step has K = 16-32 latents reading L = 512 tokens once. Projecting the tokens to keys
        and values costs L*d*2W; folding the key projection into the queries (q W_k) and applying the value
        projection after the weighted sum costs L*d*2*K*H instead, 2-4x less for K*H < W, and it is the same
        function (up to float rounding). ``extra_kv`` are keys/values projected as usual (the latents' own),
        appended after the context; ``weights``, when a list, receives the probabilities over ``context``,
        [B, heads, T, N].
        """
        b, t, _ = x.shape
        w_k, w_v = self.to_kv.weight.view(2, self.num_heads, self.head_dim, -1)
        q = self.to_q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2) * self.head_dim**-0.5
        q_in_context = torch.einsum("bhte,hed->bhtd", q, w_k)  # [B, H, T, C]
        scores = q_in_context.flatten(1, 2) @ context.transpose(1, 2)  # [B, H*T, N]: one matmul for all heads
        scores = scores.view(b, self.num_heads, t, -1)
        if context_mask is not None:
            scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
        n = scores.shape[-1]
        if extra_kv is not None:
            scores = torch.cat([scores, q @ extra_kv[0].transpose(-1, -2)], dim=-1)
        probs = scores.softmax(dim=-1)
        if weights is not None:
            weights.append(probs[..., :n])
        read = (probs[..., :n].flatten(1, 2) @ context).view(b, self.num_heads, t, -1)  # [B, H, T, C]
        out = torch.einsum("bhtd,hed->bhte", read, w_v)
        if extra_kv is not None:
            out = out + probs[..., n:] @ extra_kv[1]
        return self.to_out(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """Two-layer SiLU MLP of width ``mult * dim``."""

    def __init__(self, dim: int, mult: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mult))
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.up(x)))
