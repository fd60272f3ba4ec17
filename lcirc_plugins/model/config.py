"""``LCIRCConfig``: every architectural choice of an adapter, as a dataclass saved as JSON.

A plain dataclass (PEFT's choice) rather than a transformers ``PreTrainedConfig``: the adapter is not a
model of its own, it has no hub class, and its JSON must stay readable and stable across transformers
releases. The field defaults are the paper reader's (segment 512, K = 32, 2 Perceiver layers, GCA before every
5th decoder layer plus the last, FFN 2d, window M = 1024).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, CorruptFileError

CONFIG_NAME = "adapter_config.json"
FORMAT_VERSION = 1

# Keys that only describe where an adapter came from; anything else unknown could change the architecture.
READERS = ("paper", "layer")
_INFORMATIONAL_KEYS = {"format_version", "lcirc_plugins_version", "backbone"}


@dataclass
class LCIRCConfig:
    """Configuration of an LCIRC / QD-LCIRC adapter.

    The adapter works in the backbone's hidden size ``d``; the fields below are independent of the backbone,
    except ``gca_layers``, which is resolved to explicit decoder-layer indices when the adapter is attached,
    so that a saved adapter never depends on re-running a heuristic.
    """

    segment_len: int = field(default=512, metadata={"help": "Tokens per compression segment at inference (L)."})
    max_segment_len: int = field(
        default=2048, metadata={"help": "Longest segment the in-segment position table covers (training draws lengths up to this)."}
    )
    num_latents: int = field(default=32, metadata={"help": "Memory vectors produced per segment (K)."})
    perceiver_layers: int = field(default=2, metadata={"help": "Layers of the Perceiver compressor."})
    perceiver_self_attend: bool = field(
        default=True, metadata={"help": "Latents also attend to themselves in the Perceiver (Flamingo's resampler)."}
    )
    segment_encoder_layers: int = field(
        default=0,
        metadata={"help": "Self-attention layers over each segment's tokens before the Perceiver (contextual features; 0 = raw embeddings, as in the paper)."},
    )
    head_dim: int = field(default=64, metadata={"help": "Size of one attention head in adapter attention."})
    ffn_mult: float = field(default=2.0, metadata={"help": "Width of adapter feed-forward blocks, as a multiple of d."})
    gca_every: int = field(default=5, metadata={"help": "Put a gated cross-attention block before every n-th decoder layer."})
    gca_layers: list[int] | None = field(
        default=None, metadata={"help": "Explicit decoder-layer indices for GCA blocks (overrides gca_every; the last layer is always included when derived)."}
    )
    order_dim: int = field(default=64, metadata={"help": "Sinusoidal features of the segment index fed to the learned order projection."})
    query_dependent: bool = field(default=False, metadata={"help": "QD-LCIRC: condition each compression step on the question."})
    max_query_tokens: int = field(default=256, metadata={"help": "Longest query (in tokens) used to condition compression."})
    window: int = field(default=1024, metadata={"help": "Decoder window M: prompts longer than this are refused, the rest of the context goes to memory."})
    gate_init: float = field(
        default=0.0, metadata={"help": "Initial value of the tanh gates. 0 leaves the backbone exactly unchanged; non-zero only for tests."}
    )
    reader: str = field(
        default="paper",
        metadata={
            "help": "How decoder layers read the memory. 'paper': LCIRC's Perceiver memory of d-vectors read by new GCA blocks "
            "(the paper's configuration). 'layer': each GCA layer reads slots of its own normed input states through a copy "
            "of its own self-attention with RoPE positions (tied to the frozen weights, trained by a LoRA delta)."
        },
    )
    lora_rank: int = field(default=8, metadata={"help": "'layer' reader: rank of the trained delta on the copied q/k/v/o projections (0: none)."})
    tokens_per_slot: int = field(
        default=1, metadata={"help": "'layer' reader: consecutive tokens pooled into one memory slot (1: uncompressed; 32: K = 16 per 512 tokens)."}
    )
    slot_correction: bool = field(
        default=False,
        metadata={"help": "'layer' reader: the Perceiver recurrence corrects each pooled slot (a learned read-out over the segment, gated from 0)."},
    )
    slot_selection: bool = field(
        default=False,
        metadata={
            "help": "'layer' reader: each segment keeps the states of its K most salient tokens at their own positions instead of "
            "pooled windows; the salience scorer is trained to match the backbone's own attention (TrainConfig.salience_distill)."
        },
    )
    salience_layer: int | None = field(
        default=None,
        metadata={
            "help": "'layer' reader with slot_selection: the memory layer whose states the salience scorer reads "
            "(None: the memory layer nearest the middle of the backbone, where a linear scorer ranks best)."
        },
    )
    position_horizon: int | None = field(
        default=None,
        metadata={
            "help": "'layer' reader: the farthest RoPE distance a memory slot is read at. The nearest third keeps exact "
            "distances, farther ones are compressed so the farthest slot sits at the horizon (None: 3/4 of the backbone's "
            "max_position_embeddings; 0: exact distances however far)."
        },
    )
    whole_segments: int = field(
        default=0,
        metadata={
            "help": "'layer' reader with query_dependent: the question's k most relevant segments (BM25 over their text) are "
            "read whole, every token's states, from one frozen forward over those k segments at answer time (never the "
            "book); the rest is read from its slots (0: slots only)."
        },
    )
    whole_reader: bool = field(
        default=False,
        metadata={
            "help": "With whole_segments: the whole segments are read by a second reader per layer with its own LoRA deltas "
            "and gate (closed at first), so learning to read whole segments cannot move how the slots are read."
        },
    )
    whole_beside: bool = field(
        default=False,
        metadata={"help": "With whole_reader: a whole segment's own slots stay beside its whole rows (default: in their place)."},
    )
    whole_softmax: str = field(
        default="separate",
        metadata={
            "help": "With whole_reader: 'separate' reads slots and whole rows each with its own softmax and adds the two "
            "gated reads; 'joint' scores each kind with its own reader's deltas in one softmax over all rows (QD bias on "
            "both), so the question's whole rows take attention from the slots, as one shared reader's would."
        },
    )
    whole_near_prompt: bool = field(
        default=False,
        metadata={
            "help": "With whole_reader: the question's whole segments are read just before the prompt, in text order and one "
            "position apart, instead of at their folded place in the book (as a retriever puts its passages beside the "
            "question), so a segment far back does not lose the joint softmax to thousands of nearer slots."
        },
    )
    memory_sink: float | None = field(
        default=None,
        metadata={
            "help": "'layer' reader: the starting logit of a learned null row per query head in the memory's softmax, so "
            "a token that finds nothing to read in the memory reads (almost) nothing (None: every token reads the memory, "
            "as adapters before it did)."
        },
    )
    decoder_layers_path: str | None = field(
        default=None, metadata={"help": "Dotted path to the decoder layer list, only for backbones the automatic search cannot resolve."}
    )

    def __post_init__(self) -> None:
        positive = ["segment_len", "max_segment_len", "num_latents", "tokens_per_slot", "perceiver_layers", "head_dim", "gca_every", "order_dim", "max_query_tokens", "window"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        layers = self.segment_encoder_layers
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < 0:
            raise ConfigError(f"segment_encoder_layers must be an integer >= 0, got {layers!r}")
        if self.reader not in READERS:
            raise ConfigError(f"reader must be one of {READERS}, got {self.reader!r}")
        if not isinstance(self.lora_rank, int) or isinstance(self.lora_rank, bool) or self.lora_rank < 0:
            raise ConfigError(f"lora_rank must be an integer >= 0, got {self.lora_rank!r}")
        horizon = self.position_horizon
        if horizon is not None and (not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 0):
            raise ConfigError(f"position_horizon must be None or an integer >= 0, got {horizon!r}")
        if self.slot_selection and self.slot_correction:
            raise ConfigError("slot_selection keeps exact token states; it cannot be combined with slot_correction")
        if not isinstance(self.whole_segments, int) or isinstance(self.whole_segments, bool) or self.whole_segments < 0:
            raise ConfigError(f"whole_segments must be an integer >= 0, got {self.whole_segments!r}")
        if self.whole_segments and (self.reader != "layer" or self.slot_correction):
            raise ConfigError("whole_segments needs the 'layer' reader without slot_correction (segments compressed independently)")
        if self.whole_reader and not self.whole_segments:
            raise ConfigError("whole_reader reads the question's whole segments: set whole_segments >= 1 as well")
        if self.whole_beside and not self.whole_reader:
            raise ConfigError("whole_beside keeps slots beside whole rows for a second reader: set whole_reader as well")
        if self.whole_softmax not in ("separate", "joint"):
            raise ConfigError(f"whole_softmax is 'separate' or 'joint', got {self.whole_softmax!r}")
        if self.whole_near_prompt and not self.whole_reader:
            raise ConfigError("whole_near_prompt places the rows a second reader reads: set whole_reader as well")
        if self.whole_softmax != "separate" and not self.whole_reader:
            raise ConfigError("whole_softmax chooses how a second reader's rows are read: set whole_reader as well")
        sink = self.memory_sink
        if sink is not None and (isinstance(sink, bool) or not isinstance(sink, (int, float)) or not math.isfinite(sink)):
            raise ConfigError(f"memory_sink must be None or a finite number (a logit), got {sink!r}")
        if sink is not None and self.reader != "layer":
            raise ConfigError("memory_sink is a null row of the 'layer' reader's softmax: set reader='layer'")
        if self.ffn_mult <= 0:
            raise ConfigError(f"ffn_mult must be > 0, got {self.ffn_mult!r}")
        if self.segment_len > self.max_segment_len:
            raise ConfigError(
                f"segment_len ({self.segment_len}) must be <= max_segment_len ({self.max_segment_len}), "
                "the size of the in-segment position table"
            )
        if self.order_dim % 2:
            raise ConfigError(f"order_dim must be even (sine and cosine pairs), got {self.order_dim}")
        if self.gca_layers is not None:
            if not self.gca_layers or any(not isinstance(i, int) or i < 0 for i in self.gca_layers):
                raise ConfigError(f"gca_layers must be a non-empty list of layer indices >= 0, got {self.gca_layers!r}")
            self.gca_layers = sorted(set(self.gca_layers))

    def resolve_gca_layers(self, num_layers: int) -> list[int]:
        """Explicit GCA layer indices for a backbone with ``num_layers`` decoder layers."""
        if self.gca_layers is not None:
            bad = [i for i in self.gca_layers if i >= num_layers]
            if bad:
                raise ConfigError(f"gca_layers {bad} are out of range for a backbone with {num_layers} decoder layers")
            return list(self.gca_layers)
        if self.reader == "layer":  # the layers where the model copies: the last three quarters (E5 used 8-29 of 30)
            return list(range(num_layers - (3 * num_layers) // 4, num_layers))
        return sorted(set(range(0, num_layers, self.gca_every)) | {num_layers - 1})

    def resolve_position_horizon(self, max_positions: int | None) -> int:
        """The RoPE horizon for a backbone trained on ``max_positions`` tokens (0: no folding)."""
        if self.position_horizon is not None:
            return self.position_horizon
        return 3 * max_positions // 4 if max_positions else 0

    def resolve_salience_layer(self, num_layers: int) -> int | None:
        """The memory layer the salience scorer reads (after :meth:`resolve_gca_layers`); None without selection."""
        if not self.slot_selection:
            return None
        layers = self.resolve_gca_layers(num_layers)
        if self.salience_layer is None:
            return min(layers, key=lambda i: abs(i - num_layers // 2))
        if self.salience_layer not in layers:
            raise ConfigError(f"salience_layer {self.salience_layer} must be one of the memory layers {layers}")
        return self.salience_layer

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> LCIRCConfig:
        """Build a config, refusing unknown keys that could change the architecture (as PEFT does)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - _INFORMATIONAL_KEYS)
        if unknown:
            raise ConfigError(
                f"{source} has unknown keys {unknown}: it was written by a newer or different version of "
                "lcirc_plugins; upgrade the package or remove the keys"
            )
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``adapter_config.json`` (sorted, indented) with the format version and ``extra`` keys."""
        from .. import __version__

        path = Path(directory) / CONFIG_NAME
        payload = {**self.to_dict(), "format_version": FORMAT_VERSION, "lcirc_plugins_version": __version__, **(extra or {})}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> tuple[LCIRCConfig, dict[str, Any]]:
        """Read ``adapter_config.json``; returns the config and the raw JSON (for the backbone signature)."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise CorruptFileError(f"{path} not found: an adapter directory holds adapter_config.json and adapter_model.safetensors")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CorruptFileError(f"{path} is not valid JSON ({err}); the adapter config is corrupt") from err
        if not isinstance(raw, dict):
            raise CorruptFileError(f"{path} must hold a JSON object, found {type(raw).__name__}")
        version = raw.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise CorruptFileError(f"{path} has format_version {version}; this lcirc_plugins reads version {FORMAT_VERSION}")
        try:
            config = cls.from_dict(raw, source=str(path))
        except TypeError as err:
            raise CorruptFileError(f"{path} has fields of the wrong type: {err}") from err
        if "backbone" not in raw:
            warnings.warn(f"{path} has no backbone signature; the adapter cannot be checked against the backbone", stacklevel=2)
        return config, raw
