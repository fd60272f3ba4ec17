"""The trainable part of LCIRC, and its checkpoint format (PEFT-style).

``LCIRCAdapter`` owns everything that is trained: the recurrent compressor (``h(0)``, position and order
embeddings, Perceiver, QD mixer) and one GCA block per chosen decoder layer. It is saved as
``adapter_config.json`` + ``adapter_model.safetensors``; loading checks the backbone signature first and
then loads the tensors strictly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..errors import AdapterMismatchError, ConfigError, CorruptFileError
from .compressor import RecurrentCompressor
from .config import LCIRCConfig
from .gated_cross_attention import GatedCrossAttentionBlock
from .layer_memory import LayerMemoryCompressor
from .layer_reader import LayerReader, anatomy
from .memory import tensors_sha256

WEIGHTS_NAME = "adapter_model.safetensors"
SIGNATURE_KEYS = ("hidden_size", "num_hidden_layers", "vocab_size")


class LCIRCAdapter(nn.Module):
    """The compressor and one GCA block per chosen decoder layer (keyed by the layer's index).

    With ``config.reader == "layer"`` the blocks are :class:`LayerReader` copies of the given decoder
    ``layers``' own attention and the compressor makes per-layer slots (:class:`LayerMemoryCompressor`).
    """

    def __init__(self, dim: int, gca_layers: list[int], config: LCIRCConfig, layers: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.reads_layers = config.reader == "layer"
        if self.reads_layers:
            if layers is None:
                raise ValueError("the layer reader needs the backbone's decoder layers")
            self.compressor: RecurrentCompressor | LayerMemoryCompressor = LayerMemoryCompressor(dim, config)
            blocks: dict[str, nn.Module] = {
                str(i): LayerReader(
                    anatomy(layers[i]),
                    config.lora_rank,
                    config.gate_init,
                    config.whole_reader,
                    config.whole_softmax == "joint",
                    config.memory_sink,
                )
                for i in gca_layers
            }
        else:
            self.compressor = RecurrentCompressor(dim, config)
            blocks = {str(i): GatedCrossAttentionBlock(dim, dim, config.head_dim, config.ffn_mult, config.gate_init) for i in gca_layers}
        self.gca = nn.ModuleDict(blocks)
        self._fingerprint: tuple[tuple[int, ...], str] | None = None

    def blocks(self) -> dict[int, GatedCrossAttentionBlock | LayerReader]:
        return {int(i): block for i, block in self.gca.items()}  # type: ignore[misc]

    def graft_whole_readers(self, donor: LCIRCAdapter) -> None:
        """Start each layer's whole reader as ``donor``'s reader of that layer (its deltas and gate).

        Why: a reader trained with whole segments (R5 in docs/TRAINING_FINDINGS.md) reads them best, and this
        adapter's slot readers read slots best; the whole reader lets one adapter keep both.
        """
        if not all(isinstance(block, LayerReader) and block.whole is not None for block in self.gca.values()):
            raise AdapterMismatchError("only a layer-reader adapter with whole_reader=True has whole readers to graft into")
        if set(donor.gca) != set(self.gca):
            raise AdapterMismatchError(f"the donor reads layers {sorted(map(int, donor.gca))}, this adapter {sorted(map(int, self.gca))}")
        with torch.no_grad():
            for index, block in self.gca.items():
                reader = {name: t for name, t in donor.gca[index].state_dict().items() if not name.startswith("whole.")}
                try:
                    block.whole.load_state_dict(reader)
                except RuntimeError as err:
                    raise AdapterMismatchError(f"the donor's reader of layer {index} does not fit this adapter's: {err}") from err

    def fingerprint(self) -> str:
        """sha256 of the weights, recomputed only when a parameter changed (tensor version counters)."""
        versions = tuple(p._version for p in self.parameters())
        if self._fingerprint is None or self._fingerprint[0] != versions:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
            self._fingerprint = (versions, digest.hexdigest())
        return self._fingerprint[1]


def save_adapter(adapter: LCIRCAdapter, config: LCIRCConfig, signature: dict[str, Any], directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the adapter directory; ``dtype`` (e.g. bfloat16) shrinks the file for shipping."""
    tensors = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    return _write_adapter(config, signature, tensors, directory)


def _write_adapter(config: LCIRCConfig, signature: dict[str, Any], tensors: dict[str, torch.Tensor], directory: str | Path) -> Path:
    """``adapter_config.json`` and the weights (with their checksum), the weights written whole or not at all."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save(directory, extra={"backbone": signature})
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "lcirc_format": "1", "tensors_sha256": tensors_sha256(tensors)})
    tmp.replace(directory / WEIGHTS_NAME)
    return directory


def check_signature(saved: dict[str, Any] | None, live: dict[str, Any], source: str) -> None:
    """Refuse an adapter made for a backbone with another hidden size, layer count or vocabulary."""
    if not saved:
        return
    for key in SIGNATURE_KEYS:
        if key in saved and saved[key] != live[key]:
            raise AdapterMismatchError(
                f"adapter {source} was made for a backbone with {key}={saved[key]} ({saved.get('name_or_path', '?')}), "
                f"but this backbone has {key}={live[key]} ({live.get('name_or_path', '?')})"
            )


def read_adapter_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``adapter_model.safetensors``, checked against the checksum in its header."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise CorruptFileError(f"{path} not found: the adapter directory is incomplete")
    try:
        with safe_open(str(path), framework="pt") as handle:
            checksum = (handle.metadata() or {}).get("tensors_sha256")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFileError(f"{path} is not a readable safetensors file ({err}); the adapter weights are corrupt") from err
    if checksum is not None and tensors_sha256(tensors) != checksum:
        raise CorruptFileError(f"{path} is damaged: its tensors do not match the checksum in its header")
    return tensors


def load_adapter_weights(adapter: LCIRCAdapter, directory: str | Path, allow_missing: bool = False) -> None:
    """Load ``adapter_model.safetensors`` strictly into ``adapter`` (cast to its dtype).

    ``allow_missing`` lets modules the file does not hold keep their initialisation: an adapter grown from a
    saved one (e.g. the QD stage started from an LCIRC adapter). Unexpected or misshapen tensors still fail.
    """
    path = Path(directory) / WEIGHTS_NAME
    tensors = read_adapter_tensors(directory)
    expected = adapter.state_dict()
    missing = [] if allow_missing else sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CorruptFileError(
            f"{path} does not match adapter_config.json: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    wrong = [k for k in tensors if expected[k].shape != tensors[k].shape]
    if wrong:
        raise CorruptFileError(f"{path} has tensors of the wrong shape, e.g. {wrong[0]}: {tuple(tensors[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)}")
    adapter.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=not allow_missing)


def keep_memory_layers(directory: str | Path, keep: Sequence[int], output: str | Path) -> Path:
    """Write ``directory``'s adapter reading its memory at the layers ``keep`` only: the other layers' readers and
    stored states are gone, every kept weight is as saved (same dtype).

    Why (docs/TRAINING_FINDINGS.md, "Fewer memory layers"): each reading layer adds a fixed amount of work to every
    decoded token, and most layers of the shipped adapter can be closed at the cost of few answers. The memory
    stores states only at the kept layers, so memories must be compressed again with the new adapter (its
    fingerprint differs). The layer reader's compressor reads the first memory layer (the QD mixer) and the
    salience layer: both must be kept.
    """
    config, raw = LCIRCConfig.load(directory)
    signature = raw.get("backbone") or {}
    layers, salience = config.gca_layers, config.salience_layer
    if layers is None or (config.reader == "layer" and config.slot_selection and salience is None):
        raise ConfigError(
            f"{directory}/adapter_config.json does not name its memory layers (gca_layers, salience_layer); "
            "an adapter saved by LCIRCModel.save_pretrained does"
        )
    keep = sorted({int(i) for i in keep})
    unknown = sorted(set(keep) - set(layers))
    if not keep or unknown:
        raise ConfigError(f"keep {unknown or 'no layer'}: the adapter reads its memory at layers {layers}; keep a non-empty subset of them")
    if config.reader == "layer":
        needed = {"the first memory layer (the compressor's input)": layers[0]}
        if config.slot_selection:
            needed["the salience layer"] = salience
        lost = [f"{what} {layer}" for what, layer in needed.items() if layer not in keep]
        if lost:
            raise ConfigError(f"cannot drop {' and '.join(lost)}: the compressor reads it")
    dropped = tuple(f"gca.{i}." for i in layers if i not in keep)
    tensors = {name: t for name, t in read_adapter_tensors(directory).items() if not name.startswith(dropped)}
    config.gca_layers = keep
    return _write_adapter(config, signature, tensors, output)
