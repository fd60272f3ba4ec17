"""``CompressedMemory``: a compressed document, reusable across questions and sessions.

It carries what is needed to use it (``features``), to recompress it for a question in QD mode and to
continue it (``token_ids``), to say where an answer came from (``spans``: the character range of every
segment in the source text), and to refuse it for the wrong model (adapter fingerprint and backbone
signature). Saved as one safetensors file: tensors plus a JSON header, no pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..errors import CorruptFileError, LCIRCError, MemoryMismatchError

MEMORY_FORMAT_VERSION = "1"


def token_hash(token_ids: torch.Tensor) -> str:
    """sha256 of the token ids (int32, little-endian): the content exactly as the model compressed it."""
    return hashlib.sha256(token_ids.to(torch.int32).contiguous().numpy().tobytes()).hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors exactly as stored (names, dtypes, shapes, bytes).

    Kept in a file's header and checked on load: safetensors notices a truncated file but not flipped or
    edited bytes, which would otherwise give silently wrong answers.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class CompressedMemory:
    """The recurrent memory of one text.

    Attributes:
        features: [S*K, d] raw compressed features ``[h(1); ...; h(S)]`` (float32, no order signal).
        token_ids: [N] the token ids that were compressed (int32).
        spans: [S, 2] character ``[start, end)`` of every segment in the source text.
        num_chars: length of the source text in characters (appended texts count from here).
        segment_len, num_latents: the segmentation the features were made with.
        adapter_fingerprint: sha256 of the adapter weights that made it.
        backbone: the backbone signature (model type, sizes, tokenizer fingerprint).
        metadata: free-form JSON-able information (title, source path, ...), kept on save.
        positions: layer reader only: [N] token position of each slot's centre in the source (RoPE).
        latents: layer reader with slot correction only: [S*K_lat, d] the recurrent latents after each
            segment (the state that appending continues from).
        whole_rows: a question's view only (``LCIRCModel.for_question`` with a whole reader): [N] True on the
            rows of its whole segments, which the whole reader reads; such a view is never saved.
        projected: layer reader only, filled by ``LCIRCModel.keys_values``: the adapter's fingerprint and the
            readers' keys/values of every row before RoPE; never saved, and a view made by ``dataclasses.replace``
            starts without it.

    With the layer reader ``features`` is [N, M, d]: one slot state per memory layer.
    """

    features: torch.Tensor
    token_ids: torch.Tensor
    spans: torch.Tensor
    num_chars: int
    segment_len: int
    num_latents: int
    adapter_fingerprint: str
    backbone: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    positions: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    whole_rows: torch.Tensor | None = None
    projected: tuple[str, torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.numel())

    @property
    def num_segments(self) -> int:
        return int(self.spans.shape[0])

    @property
    def num_vectors(self) -> int:
        return int(self.features.shape[0])

    @property
    def content_sha256(self) -> str:
        return token_hash(self.token_ids)

    @property
    def compression_ratio(self) -> float:
        return self.num_tokens / max(1, self.num_vectors)

    def segment_token_ids(self, segment: int) -> torch.Tensor:
        """The token ids compressed by step ``segment`` (int32)."""
        return self.token_ids[segment * self.segment_len : (segment + 1) * self.segment_len]

    @property
    def reads_layers(self) -> bool:
        """Whether this memory holds per-layer slots for the layer reader."""
        return self.positions is not None

    def segment_of_rows(self) -> torch.Tensor:
        """The segment each memory row belongs to, [N] (layer memories: from the slot's token position)."""
        if self.reads_layers:
            return (self.positions // self.segment_len).long().clamp(0, self.num_segments - 1)
        return torch.arange(self.num_vectors) // self.num_latents

    def slot_latents(self) -> torch.Tensor | None:
        """Layer memories with slot correction: the latent that made each slot, [N, d] (slot k of a segment is
        made by that segment's latent k), or None (then QD reads the slots' first-layer states)."""
        if self.latents is None or not self.reads_layers:
            return None
        per_segment = len(self.latents) // self.num_segments
        segment = self.segment_of_rows()
        within = torch.arange(len(segment)) - torch.searchsorted(segment, segment)
        return self.latents[segment * per_segment + within]

    def check_compatible(self, adapter_fingerprint: str, backbone: dict[str, Any]) -> None:
        """Raise ``MemoryMismatchError`` unless this memory was made by that adapter on that backbone."""
        if self.adapter_fingerprint != adapter_fingerprint:
            raise MemoryMismatchError(
                f"this memory was made by adapter {self.adapter_fingerprint[:12]}, but the model's adapter is "
                f"{adapter_fingerprint[:12]}: compress the text again with this model"
            )
        for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "tokenizer"):
            if self.backbone.get(key) != backbone.get(key):
                raise MemoryMismatchError(
                    f"this memory was made on a backbone with {key}={self.backbone.get(key)!r}, "
                    f"the model's backbone has {key}={backbone.get(key)!r}"
                )

    def __repr__(self) -> str:
        layers = f"layers={self.features.shape[1]}, " if self.features.dim() == 3 else ""
        return (
            f"CompressedMemory(num_tokens={self.num_tokens:,}, num_segments={self.num_segments}, "
            f"num_vectors={self.num_vectors}, {layers}dim={self.features.shape[-1]}, adapter={self.adapter_fingerprint[:12]})"
        )

    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` file (tensors + JSON header); written to a temp name, then renamed."""
        path = Path(path)
        if self.whole_rows is not None:
            raise LCIRCError("this is a question's view of a memory (its whole segments flagged for the whole reader): save the stored memory")
        header = {
            "lcirc_memory_format": MEMORY_FORMAT_VERSION,
            "num_chars": str(self.num_chars),
            "segment_len": str(self.segment_len),
            "num_latents": str(self.num_latents),
            "adapter_fingerprint": self.adapter_fingerprint,
            "backbone": json.dumps(self.backbone, sort_keys=True),
            "metadata": json.dumps(self.metadata, sort_keys=True),
            "content_sha256": self.content_sha256,
        }
        tensors = {
            "features": self.features.detach().float().contiguous(),
            "token_ids": self.token_ids.to(torch.int32).contiguous(),
            "spans": self.spans.to(torch.int64).contiguous(),
        }
        for name in ("positions", "latents"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name).detach().float().contiguous()
        header["tensors_sha256"] = tensors_sha256(tensors)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=header)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CompressedMemory:
        """Read a memory file; a truncated, edited or foreign file raises ``CorruptFileError``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"memory file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CorruptFileError(f"{path} is not a readable safetensors memory file ({err})") from err
        if header.get("lcirc_memory_format") != MEMORY_FORMAT_VERSION:
            raise CorruptFileError(f"{path} is not an lcirc compressed memory (format {header.get('lcirc_memory_format')!r})")
        if "tensors_sha256" in header and tensors_sha256(tensors) != header["tensors_sha256"]:
            raise CorruptFileError(f"{path} is damaged: its tensors do not match the checksum in its header")
        try:
            memory = cls(
                features=tensors["features"],
                token_ids=tensors["token_ids"],
                spans=tensors["spans"],
                num_chars=int(header["num_chars"]),
                segment_len=int(header["segment_len"]),
                num_latents=int(header["num_latents"]),
                adapter_fingerprint=header["adapter_fingerprint"],
                backbone=json.loads(header["backbone"]),
                metadata=json.loads(header["metadata"]),
                positions=tensors.get("positions"),
                latents=tensors.get("latents"),
            )
        except (KeyError, ValueError) as err:
            raise CorruptFileError(f"{path} is missing or has a malformed field: {err}") from err
        if memory.reads_layers:
            shape_ok = memory.features.dim() == 3 and memory.positions.shape == memory.features.shape[:1]
        else:
            shape_ok = memory.features.dim() == 2 and memory.features.shape[0] == memory.num_segments * memory.num_latents
        if not shape_ok or memory.content_sha256 != header.get("content_sha256"):
            raise CorruptFileError(f"{path} is inconsistent (features, spans and token hash disagree); the file was altered")
        return memory


@dataclass
class MemoryRows:
    """What one prompt's decoder reads: memory rows and, for the layer reader, their RoPE positions.

    ``features`` is [N, d] (paper reader) or [N, M, d] (layer reader), optionally with a leading batch axis;
    ``positions`` [N] are relative to the prompt (its first token sits at 0, the memory's last token at -1),
    and ``span`` is how many text tokens the rows cover. Several memories read by one prompt are
    concatenated in order (:meth:`concat`): the later a text, the closer it sits to the prompt.
    """

    features: torch.Tensor
    positions: torch.Tensor | None = None
    span: int = 0
    bias: torch.Tensor | None = None  # [N] QD relevance of each slot, added to the readers' attention logits
    token_scores: torch.Tensor | None = None  # training only: salience logits of every compressed token (slot selection)
    whole: torch.Tensor | None = None  # [N] True on the rows the whole reader reads (whole segments)
    keys_values: torch.Tensor | None = None  # [N, M, 2, H_kv, head_dim] the readers' keys/values before RoPE, or None

    @classmethod
    def of(
        cls,
        memory: CompressedMemory,
        features: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        keys_values: torch.Tensor | None = None,
    ) -> MemoryRows:
        """A memory's rows (or ``features`` recomputed from it, e.g. for a question) placed before the prompt."""
        positions = None if memory.positions is None else memory.positions.float() - memory.num_tokens
        features = memory.features if features is None else features
        return cls(features, positions, memory.num_tokens, bias, whole=memory.whole_rows, keys_values=keys_values)

    @classmethod
    def beside(cls, slots: MemoryRows, whole: MemoryRows) -> MemoryRows:
        """The same text's slots and its whole segments' rows (flagged for the whole reader), at their own positions.

        Rows may carry a leading batch axis; the whole rows get no QD bias (the question already chose them).
        """
        lead, device = slots.features.shape[:-3], slots.features.device
        flags = [
            torch.zeros(*lead, slots.features.shape[-3], dtype=torch.bool, device=device),
            torch.ones(*lead, whole.features.shape[-3], dtype=torch.bool, device=device),
        ]
        bias = None
        if slots.bias is not None:
            bias = torch.cat([slots.bias, torch.zeros(*lead, whole.features.shape[-3]).to(slots.bias)], dim=-1)
        return cls(
            torch.cat([slots.features, whole.features.to(slots.features)], dim=-3),
            torch.cat([slots.positions, whole.positions.to(slots.positions)], dim=-1),
            slots.span,
            bias,
            token_scores=slots.token_scores,
            whole=torch.cat(flags, dim=-1),
        )

    @classmethod
    def concat(cls, parts: list[MemoryRows], batched: bool = False) -> MemoryRows:
        """The parts read in order by one prompt; ``batched`` when every part has a leading batch axis."""
        if len(parts) == 1:
            return parts[0]
        rows = 1 if batched else 0
        features = torch.cat([p.features.float() for p in parts], dim=rows)
        span = sum(p.span for p in parts)
        if any(p.positions is None for p in parts):
            return cls(features, None, span)
        later = [sum(p.span for p in parts[i + 1 :]) for i in range(len(parts))]
        positions = torch.cat([p.positions - shift for p, shift in zip(parts, later)], dim=-1)
        bias, whole = (_per_row(parts, name, rows, dtype) for name, dtype in (("bias", torch.float32), ("whole", torch.bool)))
        keys_values = None  # projected beforehand only if every part was (else the readers project them all)
        if all(p.keys_values is not None for p in parts):
            keys_values = torch.cat([p.keys_values.to(parts[0].keys_values) for p in parts], dim=rows)
        return cls(features, positions, span, bias, whole=whole, keys_values=keys_values)


def _per_row(parts: list[MemoryRows], name: str, rows: int, dtype: torch.dtype) -> torch.Tensor | None:
    """The per-row tensor ``name`` (QD bias, whole-row flags) of parts read in order; zeros where a part has none."""
    if all(getattr(p, name) is None for p in parts):
        return None
    return torch.cat(
        [
            torch.zeros(p.features.shape[: rows + 1], dtype=dtype) if getattr(p, name) is None else getattr(p, name).to("cpu", dtype)
            for p in parts
        ],
        dim=-1,
    )
