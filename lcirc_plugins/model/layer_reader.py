"""The "layer" reader: each decoder layer reads its memory through a copy of its own self-attention.

Why (docs/TRAINING_FINDINGS.md, "the reader"): randomly initialised cross-attention blocks never learned to copy a
pass key out of the memory, while the frozen model copies it at once when the text is in its window. So the
gated cross-attention (GCA) block of layer j *is* layer j's attention heads: its query, key, value and output
projections, q/k norms, scaling and rotary positions, tied to the frozen weights (nothing copied is stored),
plus a trained low-rank delta (LoRA) on each projection and a tanh gate that starts closed:

    x = x + tanh(g) * o(Attn(q(LN_j(x)), k(m_j), v(m_j)))

where ``m_j`` holds memory states in layer j's own normed input space and ``LN_j`` is the layer's input norm.
Families are described by data (:func:`anatomy`), not subclasses: separate q/k/v/o projections (Llama,
Mistral, Qwen2/3, Gemma3, ...) or GPT-2's fused ``c_attn``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedBackboneError

RotaryTables = tuple[torch.Tensor, torch.Tensor]  # cos, sin: [B, N, head_dim]
_ATTENTION_NAMES = ("self_attn", "attn", "attention")
_NORM_NAMES = ("input_layernorm", "ln_1", "attention_norm", "ln_attn")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on [B, H, N, head_dim] with tables [B, N, head_dim] (Llama/Mistral/Qwen/Gemma)."""
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    return x * cos + _rotate_half(x) * sin


@dataclass(frozen=True)
class AttentionAnatomy:
    """Where one decoder layer keeps the pieces of its self-attention (all frozen, all borrowed)."""

    norm: nn.Module  # the layer's input norm
    attention: nn.Module
    dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    fused_qkv: bool  # GPT-2's c_attn
    post_norm: nn.Module | None  # Gemma-style sandwich norm applied to the attention output
    rotary: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

    def query(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_qkv:
            return self.attention.c_attn(x)[..., : self.num_heads * self.head_dim]
        return self.attention.q_proj(x)

    def key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fused_qkv:
            width = self.num_heads * self.head_dim
            _, k, v = self.attention.c_attn(x).split(width, dim=-1)
            return k, v
        return self.attention.k_proj(x), self.attention.v_proj(x)

    def output(self, heads: torch.Tensor) -> torch.Tensor:
        out = (self.attention.c_proj if self.fused_qkv else self.attention.o_proj)(heads)
        return out if self.post_norm is None else self.post_norm(out)

    def norm_query(self, q: torch.Tensor) -> torch.Tensor:
        q_norm = getattr(self.attention, "q_norm", None)
        return q if q_norm is None else q_norm(q)

    def norm_key(self, k: torch.Tensor) -> torch.Tensor:
        k_norm = getattr(self.attention, "k_norm", None)
        return k if k_norm is None else k_norm(k)


def anatomy(layer: nn.Module) -> AttentionAnatomy:
    """Describe a decoder layer's self-attention, or raise ``UnsupportedBackboneError`` naming what is missing."""
    attention = next((getattr(layer, n) for n in _ATTENTION_NAMES if isinstance(getattr(layer, n, None), nn.Module)), None)
    norm = next((getattr(layer, n) for n in _NORM_NAMES if isinstance(getattr(layer, n, None), nn.Module)), None)
    if attention is None or norm is None:
        raise UnsupportedBackboneError(
            f"{type(layer).__name__} has no self-attention ({'/'.join(_ATTENTION_NAMES)}) or input norm "
            f"({'/'.join(_NORM_NAMES)}): the 'layer' reader cannot copy it; use reader='paper'"
        )
    fused = hasattr(attention, "c_attn") and hasattr(attention, "c_proj")
    if not fused and not all(hasattr(attention, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")):
        raise UnsupportedBackboneError(
            f"{type(attention).__name__} has neither q_proj/k_proj/v_proj/o_proj nor a fused c_attn/c_proj; "
            "the 'layer' reader cannot copy it; use reader='paper'"
        )
    if fused:
        heads, head_dim = int(attention.num_heads), int(attention.head_dim)
        kv_heads = heads
        scaling = head_dim**-0.5 if getattr(attention, "scale_attn_weights", True) else 1.0
    else:
        head_dim = int(getattr(attention, "head_dim", 0) or attention.q_proj.out_features // attention.config.num_attention_heads)
        heads = attention.q_proj.out_features // head_dim
        kv_heads = attention.k_proj.out_features // head_dim
        scaling = float(getattr(attention, "scaling", head_dim**-0.5))
    # Gemma 2/3 norm the attention output before the residual ("sandwich" norms); Llama's
    # post_attention_layernorm is the MLP's input norm instead, told apart by a pre_feedforward_layernorm.
    post_norm = getattr(layer, "post_attention_layernorm", None) if hasattr(layer, "pre_feedforward_layernorm") else None
    family_rotary = getattr(sys.modules.get(type(attention).__module__), "apply_rotary_pos_emb", None)
    if family_rotary is not None:
        def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            # The family's function rotates a query and a key; one head stands in for the key it is not given.
            return family_rotary(x, x[:, :1], cos.to(x.dtype), sin.to(x.dtype))[0]
    else:
        rotary = _apply_rotary
    dim = attention.c_attn.weight.shape[0] if fused else attention.q_proj.in_features  # Conv1D weights are [in, out]
    return AttentionAnatomy(norm, attention, dim, heads, kv_heads, head_dim, scaling, fused, post_norm, rotary)


def fold_positions(positions: torch.Tensor, horizon: int) -> torch.Tensor:
    """Memory positions [B, N] (negative: the slots sit before the prompt) folded so none is farther than ``horizon``.

    Why (docs/TRAINING_FINDINGS.md, "Positions beyond the backbone's context"): a slot 30K tokens before the
    question is read at a RoPE distance the backbone never saw in training, and its keys stop matching. The
    nearest third of the horizon keeps its exact distances; farther distances shrink by the one factor per row
    that brings the farthest slot to the horizon (SelfExtend-style grouping). Order is kept, and a memory that
    fits the horizon is read exactly as stored. ``horizon`` 0 leaves every position as it is.
    """
    if horizon <= 0:
        return positions
    near = horizon / 3
    distance = -positions
    factor = ((distance.amax(dim=-1, keepdim=True) - near) / (horizon - near)).clamp(min=1.0)
    return -torch.where(distance <= near, distance, near + (distance - near) / factor)


def whole_before_prompt(positions: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """Memory positions [B, N] with the whole segments' rows (``whole`` [B, N], in text order) moved to just before
    the prompt: the last whole row at -1, each earlier one a position farther; the other rows stay where they are.

    Why (docs/TRAINING_FINDINGS.md, "Whole segments far back"): at 128K tokens a segment read whole from the book's
    start sits at the folded horizon, behind 4,096 nearer slots, and with nine reading layers its rows lost the
    joint softmax (pass keys at depth 0: 0 of 10); beside the prompt they were read.
    """
    behind = whole.flip(-1).cumsum(-1).flip(-1)  # whole rows at or after each row
    return torch.where(whole, -behind.to(positions.dtype), positions)


def _logit_mask(mask: torch.Tensor | None, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """An additive [B, 1, 1, N] attention mask: the QD ``bias`` [B, N], and -inf where ``mask`` [B, N] is False."""
    if mask is None and bias is None:
        return None
    shape = (mask if mask is not None else bias).shape
    logits = torch.zeros(shape, dtype=dtype, device=(mask if mask is not None else bias).device)
    if bias is not None:
        logits = logits + bias.to(dtype)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits[:, None, None, :]


def _softmax_of_rows(scores: torch.Tensor, mask: torch.Tensor | None, sink: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over memory rows; a prompt with no row to read (a batch where only some read whole segments) gets 0.

    ``sink`` [1, H_kv, group*T, 1] is the logit of a null row with no value: the softmax runs over the rows and
    it, so a token whose query matches no row puts its attention there and reads (almost) nothing.
    """
    if sink is None:
        probs = scores.softmax(dim=-1)
    else:
        probs = (scores - torch.logaddexp(scores.logsumexp(dim=-1, keepdim=True), sink)).exp()
    if mask is None:
        return probs
    return probs.masked_fill(~mask.any(-1)[:, None, None, None], 0.0)


def _rows_or_all(mask: torch.Tensor | None, batch: int, rows: int, device: torch.device) -> torch.Tensor:
    """A rows mask [B, N], all True where there is none (to join two kinds of rows in one softmax)."""
    if mask is not None:
        return mask
    return torch.ones(batch, rows, dtype=torch.bool, device=device)


KeysValues = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class JointRows:
    """Slots and whole rows as one softmax reads them: additive logits [B, 1, 1, N_s + N_w] (QD bias, -inf on
    padding) and the rows mask [B, N_s + N_w] (None when nothing is padded). The same at every layer and decoding
    step of a call, so the injector builds it once (:func:`joint_rows`)."""

    logits: torch.Tensor
    mask: torch.Tensor | None


def joint_rows(
    slot_mask: torch.Tensor | None, slot_bias: torch.Tensor | None, whole_mask: torch.Tensor | None, whole_bias: torch.Tensor | None,
    batch: int, num_slots: int, num_whole: int, device: torch.device,
) -> JointRows:
    """Both kinds' masks [B, N] (None: all real) and QD biases [B, N] (None: zero) as one :class:`JointRows`."""
    masks = [_rows_or_all(slot_mask, batch, num_slots, device), _rows_or_all(whole_mask, batch, num_whole, device)]
    biases = [torch.zeros(batch, n, device=device) if b is None else b.float() for b, n in ((slot_bias, num_slots), (whole_bias, num_whole))]
    mask = torch.cat(masks, dim=-1)
    return JointRows(_logit_mask(mask, torch.cat(biases, dim=-1), torch.float32), None if bool(mask.all()) else mask)


@dataclass(frozen=True)
class WholeRows:
    """What the whole reader of one layer reads: keys/values of the whole-segment rows, their padding mask [B, N_w]
    and their QD bias [B, N_w] (read only with ``whole_softmax='joint'``), and optionally both kinds' :class:`JointRows`."""

    kv: tuple[torch.Tensor, torch.Tensor]
    mask: torch.Tensor | None
    bias: torch.Tensor | None = None
    joint: JointRows | None = None


class LowRankDelta(nn.Module):
    """``x -> up(down(x))`` with ``up`` at zero: a LoRA delta that starts as nothing."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(d_in, rank, bias=False)
        self.up = nn.Linear(rank, d_out, bias=False)
        nn.init.normal_(self.down.weight, std=d_in**-0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class LayerReader(nn.Module):
    """A GCA block whose attention is its decoder layer's own, reading that layer's memory.

    Only the LoRA deltas and the gate are parameters; the borrowed modules are kept out of the module tree
    (``object.__setattr__``), so they are neither saved with the adapter nor trained.

    With ``memory_sink`` each query head also has a learned sink logit, a null row in its softmax (as gpt-oss's
    attention sinks): the read is then a softmax over the memory *and* nothing, so a token of plain text that finds
    nothing to copy adds (almost) nothing to the frozen stream. Why (docs/TRAINING_FINDINGS.md, "A memory that can
    be ignored"): over the memory alone every token reads something, and the window's continuation paid for it.

    With ``whole_reader`` a second reader of the same heads (its own deltas and gate, closed at first) reads the
    question's whole segments, the first reader the slots, each with its own softmax:

        x = x + tanh(g) * Attn(x, slots) + tanh(g_whole) * Attn_whole(x, whole segments)

    Why (docs/TRAINING_FINDINGS.md, "A second reader for whole segments"): one set of deltas trained on both
    traded reading 16 kept tokens of a segment against reading all 512. With ``joint_softmax`` the two kinds are
    scored by their own deltas but share one softmax, so whole rows that match the question take attention from
    the slots instead of adding to them (findings, "One softmax for both readers").
    """

    def __init__(
        self,
        parts: AttentionAnatomy,
        lora_rank: int,
        gate_init: float = 0.0,
        whole_reader: bool = False,
        joint_softmax: bool = False,
        memory_sink: float | None = None,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "parts", parts)
        dim, q_width, kv_width = parts.dim, parts.num_heads * parts.head_dim, parts.num_kv_heads * parts.head_dim
        self.lora = (
            nn.ModuleDict(
                {
                    "q": LowRankDelta(dim, q_width, lora_rank),
                    "k": LowRankDelta(dim, kv_width, lora_rank),
                    "v": LowRankDelta(dim, kv_width, lora_rank),
                    "o": LowRankDelta(q_width, dim, lora_rank),
                }
            )
            if lora_rank > 0
            else None
        )
        self.attn_gate = nn.Parameter(torch.tensor([gate_init]))
        self.attn_sink = None if memory_sink is None else nn.Parameter(torch.full((parts.num_heads,), float(memory_sink)))
        # Closed: reads as without it. With one softmax for both kinds of rows, this reader's sink is the joint one.
        whole_sink = None if joint_softmax else memory_sink
        self.whole = LayerReader(parts, lora_rank, memory_sink=whole_sink) if whole_reader else None
        self.joint_softmax = joint_softmax

    def _delta(self, name: str, x: torch.Tensor) -> torch.Tensor | float:
        return 0.0 if self.lora is None else self.lora[name](x)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, heads, self.parts.head_dim).transpose(1, 2)  # (B, H, N, head_dim)

    def keys_values(self, states: torch.Tensor) -> KeysValues:
        """Keys (normed, not yet rotated) and values [B, H_kv, N, head_dim] of memory states [B, N, d] (already in
        the layer's normed input space): the part of reading that does not depend on the prompt."""
        p = self.parts
        states = states.to(self.attn_gate.dtype)
        k, v = p.key_value(states)
        k = self._heads(k + self._delta("k", states), p.num_kv_heads)
        v = self._heads(v + self._delta("v", states), p.num_kv_heads)
        return p.norm_key(k), v

    def rotate_keys(self, keys_values: KeysValues, rotary: RotaryTables | None) -> KeysValues:
        """Keys and values as the prompt reads them: keys rotated to the memory's positions (``rotary``, None for
        families without RoPE) and stored transposed, [B, H_kv, head_dim, N], values [B, H_kv, N, head_dim].

        Kept per key/value head (GQA), not repeated per query head: every decoded token reads all of them, and
        reading is bound by memory bandwidth (``experiments/reading_bandwidth_probe.py``: a decoded token's read of
        5,088 rows at 22 layers took 18.3 ms with row-major keys, 15.1 ms with transposed ones).
        """
        k, v = keys_values
        if rotary is not None:
            k = self.parts.rotary(k, *rotary)
        return k.transpose(-1, -2).contiguous(), v.contiguous()

    def project_memory(self, states: torch.Tensor, rotary: RotaryTables | None) -> KeysValues:
        """Keys (transposed) and values of memory states [B, N, d] at the memory's positions (``rotary``), once per call."""
        return self.rotate_keys(self.keys_values(states), rotary)

    def _query(self, hidden: torch.Tensor, rotary: RotaryTables | None) -> torch.Tensor:
        normed = self.parts.norm(hidden)
        q = self.parts.norm_query(self._heads(self.parts.query(normed) + self._delta("q", normed), self.parts.num_heads))
        return q if rotary is None else self.parts.rotary(q, *rotary)

    def _joint_queries(self, hidden: torch.Tensor, rotary: RotaryTables | None) -> tuple[torch.Tensor, torch.Tensor]:
        """This reader's and the whole reader's queries [B, H, T, head_dim]: one norm, one frozen projection and one
        rotation for both (each decoded token pays them once per layer, not once per reader)."""
        p = self.parts
        normed = p.norm(hidden)
        base = p.query(normed)
        both = torch.cat([base + self._delta("q", normed), base + self.whole._delta("q", normed)], dim=-1)
        q = p.norm_query(self._heads(both, 2 * p.num_heads))
        q = q if rotary is None else p.rotary(q, *rotary)
        return q[:, : p.num_heads], q[:, p.num_heads :]

    def _logits(self, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Raw attention logits of queries [B, H, T, head_dim] on transposed keys [B or 1, H_kv, head_dim, N]:
        [B, H_kv, group*T, N]."""
        b, h, t, d = q.shape
        # The query heads that share a key/value head attend as one group: no per-head copy of the memory
        # (measured: 2.5x less time per decoded token than fused attention over repeated heads, 4,096 slots).
        grouped = q.reshape(b, keys.shape[1], h // keys.shape[1] * t, d)
        return (grouped @ keys).float() * self.parts.scaling

    def _scores(
        self, hidden: torch.Tensor, memory_kv: KeysValues, memory_mask: torch.Tensor | None, rotary: RotaryTables | None, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Size]:
        """Attention logits of the memory rows [B, H_kv, group*T, N] (masked, QD bias added) and the query's shape."""
        q = self._query(hidden, rotary)  # (B, H, T, head_dim)
        scores = self._logits(q, memory_kv[0])  # one memory may serve a batch of prompts
        mask = _logit_mask(memory_mask, bias, torch.float32)
        return (scores if mask is None else scores + mask), q.shape

    def _sink(self, shape: torch.Size) -> torch.Tensor | None:
        """The sink logits laid out as :meth:`_scores`' rows, [1, H_kv, group*T, 1], for a query of ``shape``."""
        if self.attn_sink is None:
            return None
        _, h, t, _ = shape
        kv_heads = self.parts.num_kv_heads
        return self.attn_sink.float().view(kv_heads, h // kv_heads, 1).expand(-1, -1, t).reshape(1, kv_heads, -1, 1)

    def _output(self, probs: torch.Tensor, v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The attention probabilities applied to the values, through the layer's output projection: [B, T, d]."""
        b, h, t, d = shape
        heads = (probs.to(v.dtype) @ v).view(b, h, t, d)
        heads = heads.transpose(1, 2).reshape(b, t, h * d)  # (B, T, H*head_dim)
        return self.parts.output(heads) + self._delta("o", heads)

    def read(
        self,
        hidden: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor | None = None,
        rotary: RotaryTables | None = None,
        bias: torch.Tensor | None = None,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """What the layer's attention returns when it attends to the memory only: [B, T, d], before the gate.

        ``weights``, when a list, receives the attention probabilities [B, heads, T, N] (provenance only).
        """
        scores, shape = self._scores(hidden, memory_kv, memory_mask, rotary, bias)
        probs = _softmax_of_rows(scores, memory_mask, self._sink(shape))
        if weights is not None:
            weights.append(probs.view(*shape[:3], -1))
        return self._output(probs, memory_kv[1], shape)

    def joint_probs(
        self,
        hidden: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor | None,
        rotary: RotaryTables | None,
        bias: torch.Tensor | None,
        whole: WholeRows,
    ) -> tuple[tuple[torch.Tensor, torch.Size], tuple[torch.Tensor, torch.Size]]:
        """``whole_softmax='joint'``: one softmax over slots (scored by this reader) and whole rows (by the whole
        reader, with their QD bias); returns each kind's probabilities [B, H_kv, group*T, N_kind] and query shape."""
        q_slots, q_whole = self._joint_queries(hidden, rotary)
        slot_scores, whole_scores = self._logits(q_slots, memory_kv[0]), self.whole._logits(q_whole, whole.kv[0])
        num_slots, num_whole = slot_scores.shape[-1], whole_scores.shape[-1]
        joint = whole.joint if whole.joint is not None else joint_rows(memory_mask, bias, whole.mask, whole.bias, hidden.shape[0], num_slots, num_whole, hidden.device)
        scores = torch.cat([slot_scores, whole_scores], dim=-1) + joint.logits
        probs = _softmax_of_rows(scores, joint.mask, self._sink(q_slots.shape))
        slot_probs, whole_probs = probs.split([num_slots, num_whole], dim=-1)
        return (slot_probs, q_slots.shape), (whole_probs, q_whole.shape)

    def attention_weights(self, *args: object) -> torch.Tensor:
        """The probabilities :meth:`read` uses for the same arguments, [B, heads, T, N] (provenance only)."""
        weights: list[torch.Tensor] = []
        self.read(*args, weights=weights)  # type: ignore[arg-type]
        return weights[0]

    def attention_of_rows(
        self, hidden: torch.Tensor, memory_kv: KeysValues, memory_mask: torch.Tensor | None, rotary: RotaryTables | None, bias: torch.Tensor | None, whole: WholeRows
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`forward` attends to, slots [B, heads, T, N_s] and whole rows [B, heads, T, N_w] (provenance only)."""
        if self.joint_softmax:
            (slot_probs, slot_shape), (whole_probs, whole_shape) = self.joint_probs(hidden, memory_kv, memory_mask, rotary, bias, whole)
            return slot_probs.view(*slot_shape[:3], -1), whole_probs.view(*whole_shape[:3], -1)
        slots = self.attention_weights(hidden, memory_kv, memory_mask, rotary, bias)
        return slots, self.whole.attention_weights(hidden, whole.kv, whole.mask, rotary)

    def forward(
        self,
        hidden: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor | None = None,
        rotary: RotaryTables | None = None,
        bias: torch.Tensor | None = None,
        whole: WholeRows | None = None,
    ) -> torch.Tensor:
        """``hidden`` [B, T, d] -> [B, T, d]: the residual stream plus the gated read (and the whole reader's)."""
        if whole is not None and self.joint_softmax:
            (slot_probs, slot_shape), (whole_probs, whole_shape) = self.joint_probs(hidden, memory_kv, memory_mask, rotary, bias, whole)
            read_slots = self._output(slot_probs, memory_kv[1], slot_shape)
            read_whole = self.whole._output(whole_probs, whole.kv[1], whole_shape)
            return hidden + torch.tanh(self.attn_gate) * read_slots + torch.tanh(self.whole.attn_gate) * read_whole
        out = hidden + torch.tanh(self.attn_gate) * self.read(hidden, memory_kv, memory_mask, rotary, bias)
        if whole is None:
            return out
        read = self.whole.read(hidden, whole.kv, whole.mask, rotary)
        if whole.mask is not None:  # a prompt without whole rows gets nothing from this reader (not o's bias)
            read = read * whole.mask.any(-1)[:, None, None].to(read.dtype)
        return out + torch.tanh(self.whole.attn_gate) * read
