"""Which ``LCIRCModel`` a front end uses: the one given, or an adapter loaded onto its backbone.

One rule for every entry point that accepts ``adapter=``/``backbone=``/``model=``: the CLI, LlamaIndex,
LangChain and the app all call :func:`load_model`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import AdapterNotFoundError, ConfigError
from .backbone import DEFAULT_BACKBONE, load_backbone
from .config import LCIRCConfig
from .lcirc_model import LCIRCModel

UNTRAINED_SEED = 0
# The default adapter's architecture: the one preset that configs/default-1-passkey.json trains (a test checks they
# agree). The layer reader: each 512-token segment keeps the states of its 16 most salient tokens at every memory
# layer (tokens_per_slot = 32), read through copies of the backbone's own attention with a rank-8 LoRA delta.
DEFAULT_ADAPTER_CONFIG = {
    "reader": "layer",
    "tokens_per_slot": 32,
    "slot_selection": True,
    "lora_rank": 8,
    "segment_len": 512,
    "max_segment_len": 512,
    "window": 1024,
}
NO_ADAPTER_WARNING = (
    "no default adapter is shipped in this installation: using a fresh, untrained adapter on the backbone, "
    "so answers are the backbone's own; pass a trained adapter directory for QD-LCIRC answers"
)


class UntrainedAdapterWarning(UserWarning):
    """No trained adapter was found, so the memory is read by an untrained (closed-gate) adapter."""


def load_model(
    adapter: str | Path = "default",
    backbone: str | PreTrainedModel | None = None,
    *,
    model: LCIRCModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    trust_remote_code: bool = False,
) -> LCIRCModel:
    """``model`` when given; otherwise ``LCIRCModel.from_pretrained(adapter, backbone)``.

    ``adapter="default"`` while no default adapter is shipped falls back to ``LCIRCModel.from_backbone``
    (with the default adapter's architecture on the default backbone)
    with an :class:`UntrainedAdapterWarning`: everything works end to end, and answers are the backbone's
    own (closed gates leave it unchanged) until a trained adapter is installed. The untrained adapter is
    initialised from a fixed seed, so it has the same fingerprint in every process and memories saved with
    it load again. Any other missing adapter is an error: a user who names an adapter expects that one.
    """
    if model is not None:
        if not isinstance(model, LCIRCModel):
            raise ConfigError(f"model= must be an LCIRCModel, got {type(model).__name__}")
        if backbone is not None or str(adapter) != "default":
            raise ConfigError("pass either model= or adapter=/backbone=, not both")
        return model
    try:
        return LCIRCModel.from_pretrained(adapter, backbone=backbone, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    except AdapterNotFoundError:
        if str(adapter) != "default":
            raise
    warnings.warn(NO_ADAPTER_WARNING, UntrainedAdapterWarning, stacklevel=2)
    chosen = backbone if backbone is not None else DEFAULT_BACKBONE
    config = LCIRCConfig(**DEFAULT_ADAPTER_CONFIG) if chosen == DEFAULT_BACKBONE else None
    name = chosen if isinstance(chosen, str) else None
    if isinstance(chosen, str):  # loaded before seeding: a GGUF conversion and a cache hit use the RNG differently
        chosen, tokenizer = load_backbone(chosen, trust_remote_code=trust_remote_code)
    with torch.random.fork_rng(devices=[]):  # a fixed seed without disturbing the caller's random state
        torch.manual_seed(UNTRAINED_SEED)
        if tokenizer is None:
            return LCIRCModel.from_backbone(chosen, config)  # raises: a ready backbone needs its tokenizer
        return LCIRCModel(chosen, tokenizer, config, backbone_name=name)
