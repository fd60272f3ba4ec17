"""Analytic forward FLOPs per system and context length (the paper's TFLOPs comparison).

FLOPs = 2 x multiply-accumulates (MACs) of the matrix products; norms, softmax, activations, embeddings
look-ups, rotary embeddings and the segment-order projection are ignored (they are O(N d), negligible).

Notation: d hidden size, n_l decoder layers, I intermediate size, H query heads, H_kv key/value heads,
h head dim (``head_dim`` or d/H), V vocabulary, m = 3 matrices in a gated MLP (Llama, Qwen, Gemma...),
2 in a plain one (GPT-2).

Decoder on T tokens (causal, every token scored by the LM head)::

    per-token linear MACs   P = n_l * (d*H*h + 2*d*H_kv*h + H*h*d + m*d*I) + d*V
    attention MACs          A(T) = n_l * 2*H*h * T(T+1)/2        (QK^T and AV, token t sees t keys)
    F_dec(T) = 2 * (T*P + A(T))

Systems for a context of N tokens (target included) and decoder window M:

* truncated backbone: ``F_dec(min(N, M))``;
* full attention: ``F_dec(N)`` (grows as N^2 through A);
* LCIRC: T = min(N, M) tokens in the window, C = N - T compressed into S = ceil(C / L) segments of
  K latents each. Adapter attention uses inner width W = max(1, d // h_a) * h_a and FFN width
  F = round(d * ffn_mult). One Perceiver layer on one segment (K latents, context L + K with latent
  self-attention, L without)::

      perceiver_layer(L) = K*d*W + (L+K)*d*2W + 2*K*(L+K)*W + K*W*d + 2*K*d*F

  An optional segment encoder (``segment_encoder_layers`` = E) adds ``E * (L*(4*d*W + 2*d*F) + 2*L^2*W)``
  per segment. The last segment holds C - (S-1)*L tokens. QD-LCIRC adds, per segment, a GCA mixer in which the K
  latents read the Q query tokens (``K*d*W + 2*K*Q*W + K*W*d + 2*K*d*F``) plus one projection of the
  query's keys/values ``Q*d*2W``. In the decoder each of the G GCA blocks reads the S*K memory vectors::

      gca(T) = S*K*d*2W + T*d*W + 2*T*(S*K)*W + T*W*d + 2*T*d*F

  F_lcirc = F_dec(T) + 2 * (sum over segments of n_p * perceiver_layer + QD terms + G * gca(T)).

* LCIRC with the layer reader (``reader = "layer"``): compressing is one frozen forward over each segment
  (``F_dec(L)`` without the LM head), and each of the G reading layers projects the N = sum ceil(L_i / tokens_per_slot)
  memory slots to keys and values with its own projections, then attends from the T decoder tokens::

      read(T) = N*d*2*H_kv*h + T*d*H*h + 2*T*N*H*h + T*H*h*d
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of a decoder-only LM that its FLOPs depend on."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    mlp_matrices: int = 3

    @classmethod
    def from_hf(cls, config: Any) -> DecoderShape:
        """From a Hugging Face config (Llama-style names, or GPT-2's n_embd / n_layer / n_head / n_inner)."""
        hidden = getattr(config, "hidden_size", None) or config.n_embd
        layers = getattr(config, "num_hidden_layers", None) or config.n_layer
        heads = getattr(config, "num_attention_heads", None) or config.n_head
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        gpt2 = getattr(config, "model_type", "") == "gpt2"
        intermediate = (getattr(config, "n_inner", None) or 4 * hidden) if gpt2 else config.intermediate_size
        return cls(hidden, layers, intermediate, heads, kv_heads, head_dim, config.vocab_size, 2 if gpt2 else 3)

    def token_macs(self) -> int:
        """P: MACs per token of all linear layers plus the LM head."""
        d, h = self.hidden, self.head_dim
        layer = d * self.heads * h + 2 * d * self.kv_heads * h + self.heads * h * d + self.mlp_matrices * d * self.intermediate
        return self.layers * layer + d * self.vocab

    def attention_macs(self, tokens: int) -> int:
        """A(T): causal attention score and value MACs over T tokens."""
        return self.layers * 2 * self.heads * self.head_dim * tokens * (tokens + 1) // 2


@dataclass(frozen=True)
class AdapterShape:
    """The LCIRC adapter sizes (from an ``LCIRCConfig``, the hidden size and the GCA layer count)."""

    hidden: int
    segment_len: int
    num_latents: int
    perceiver_layers: int
    head_dim: int
    ffn_mult: float
    gca_blocks: int
    self_attend: bool = True
    query_dependent: bool = False
    query_tokens: int = 0
    segment_encoder_layers: int = 0
    reads_layers: bool = False
    tokens_per_slot: int = 1

    @classmethod
    def from_config(cls, config: Any, hidden: int, num_layers: int, query_tokens: int = 0) -> AdapterShape:
        gca = config.gca_layers if config.gca_layers is not None else config.resolve_gca_layers(num_layers)
        return cls(
            hidden, config.segment_len, config.num_latents, config.perceiver_layers, config.head_dim, config.ffn_mult, len(gca),
            config.perceiver_self_attend, config.query_dependent, query_tokens, config.segment_encoder_layers,
            config.reader == "layer", config.tokens_per_slot,
        )  # fmt: skip

    @property
    def inner(self) -> int:
        return max(1, self.hidden // self.head_dim) * self.head_dim

    @property
    def ffn(self) -> int:
        return max(1, round(self.hidden * self.ffn_mult))


def decoder_flops(shape: DecoderShape, tokens: int) -> int:
    """F_dec(T) = 2 * (T*P + A(T))."""
    return 2 * (tokens * shape.token_macs() + shape.attention_macs(tokens))


def flops_truncated(shape: DecoderShape, context: int, window: int) -> int:
    """The backbone reading only the last ``window`` tokens."""
    return decoder_flops(shape, min(context, window))


def flops_full(shape: DecoderShape, context: int) -> int:
    """The backbone attending to all ``context`` tokens."""
    return decoder_flops(shape, context)


def _perceiver_layer_macs(a: AdapterShape, seg: int) -> int:
    d, w, k = a.hidden, a.inner, a.num_latents
    ctx = seg + k if a.self_attend else seg
    return k * d * w + ctx * d * 2 * w + 2 * k * ctx * w + k * w * d + 2 * k * d * a.ffn


def _segment_encoder_macs(a: AdapterShape, seg: int) -> int:
    """Self-attention layers over one segment: projections, L x L attention, MLP."""
    d, w = a.hidden, a.inner
    return a.segment_encoder_layers * (seg * (4 * d * w + 2 * d * a.ffn) + 2 * seg * seg * w)


def compression_flops(a: AdapterShape, compressed: int) -> int:
    """FLOPs to compress ``compressed`` tokens (Perceiver per segment, plus the QD mixer in QD mode)."""
    if compressed <= 0:
        return 0
    segments = math.ceil(compressed / a.segment_len)
    last = compressed - (segments - 1) * a.segment_len
    macs = a.perceiver_layers * ((segments - 1) * _perceiver_layer_macs(a, a.segment_len) + _perceiver_layer_macs(a, last))
    macs += (segments - 1) * _segment_encoder_macs(a, a.segment_len) + _segment_encoder_macs(a, last)
    if a.query_dependent and a.query_tokens:
        d, w, k, q = a.hidden, a.inner, a.num_latents, a.query_tokens
        macs += q * d * 2 * w + segments * (k * d * w + 2 * k * q * w + k * w * d + 2 * k * d * a.ffn)
    return 2 * macs


def gca_flops(a: AdapterShape, tokens: int, memory_vectors: int) -> int:
    """FLOPs of all GCA blocks for ``tokens`` decoder tokens reading ``memory_vectors`` memory vectors."""
    if memory_vectors <= 0:
        return 0
    d, w = a.hidden, a.inner
    block = (
        memory_vectors * d * 2 * w + tokens * d * w + 2 * tokens * memory_vectors * w + tokens * w * d + 2 * tokens * d * a.ffn
    )
    return 2 * a.gca_blocks * block


def flops_lcirc(shape: DecoderShape, adapter: AdapterShape, context: int, window: int) -> int:
    """LCIRC: compress the ``context - window`` oldest tokens, decode the window reading the memory."""
    tokens = min(context, window)
    compressed = context - tokens
    if adapter.reads_layers:
        return decoder_flops(shape, tokens) + layer_reader_flops(shape, adapter, compressed, tokens)
    segments = math.ceil(compressed / adapter.segment_len) if compressed > 0 else 0
    memory = segments * adapter.num_latents
    return decoder_flops(shape, tokens) + compression_flops(adapter, compressed) + gca_flops(adapter, tokens, memory)


def layer_reader_flops(shape: DecoderShape, a: AdapterShape, compressed: int, tokens: int) -> int:
    """The layer reader's compression (a frozen forward per segment, no LM head) and its G reading layers."""
    if compressed <= 0:
        return 0
    full, last = divmod(compressed, a.segment_len)
    lengths = [a.segment_len] * full + ([last] if last else [])
    body = shape.token_macs() - shape.hidden * shape.vocab
    forward = sum(2 * (n * body + shape.attention_macs(n)) for n in lengths)
    slots = sum(math.ceil(n / a.tokens_per_slot) for n in lengths)
    d, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    read = slots * d * 2 * kv + tokens * d * q + 2 * tokens * slots * q + tokens * q * d
    return forward + 2 * a.gca_blocks * read
