"""Gated cross-attention (GCA), the block that lets frozen decoder states read the compressed memory.

``x = x + tanh(a) * XAttn(LN(x), memory)``, then ``x = x + tanh(b) * FFN(LN(x))`` (LCIRC section 3.2,
as in Flamingo). The gates start at 0, so an untrained block is an exact identity. The LayerNorms live
inside the block, which makes it indifferent to the backbone's own norm flavour (Gemma's ``1 + w``
RMSNorm, GPT-2's LayerNorm) and to embedding scaling.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import CrossAttention, FeedForward


class GatedCrossAttentionBlock(nn.Module):
    def __init__(self, dim: int, memory_dim: int, head_dim: int, ffn_mult: float, gate_init: float = 0.0) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, bias=False)
        self.attn = CrossAttention(dim, memory_dim, head_dim)
        self.attn_gate = nn.Parameter(torch.tensor([gate_init]))
        self.ffn_norm = nn.LayerNorm(dim, bias=False)
        self.ffn = FeedForward(dim, ffn_mult)
        self.ffn_gate = nn.Parameter(torch.tensor([gate_init]))

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of the memory, computed once per call and reused at every decoding step.

        Made contiguous once here: the projection's head split is a strided view, and attention kernels
        would otherwise copy the whole memory again for every generated token.
        """
        k, v = self.attn.project_context(memory)
        return k.contiguous(), v.contiguous()

    def attention_weights(
        self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], memory_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """How strongly each position of ``x`` reads each memory vector: [B, heads, T, N] (provenance)."""
        return self.attn.weights(self.attn_norm(x), memory_kv, memory_mask)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` [B, T, dim] -> [B, T, dim]; ``memory_mask`` [B, N] marks real memory vectors."""
        x = x + torch.tanh(self.attn_gate) * self.attn(self.attn_norm(x), memory_kv, memory_mask)
        return x + torch.tanh(self.ffn_gate) * self.ffn(self.ffn_norm(x))
