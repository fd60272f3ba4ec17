"""One entry point that every front end (CLI, LlamaIndex, LangChain, the app) uses to get a model."""

from __future__ import annotations

import warnings

import torch

from ..errors import AdapterNotFoundError
from .backbone import DEFAULT_BACKBONE
from .lcirc_model import LCIRCModel

UNTRAINED_SEED = 0
NO_ADAPTER_WARNING = "no trained adapter is shipped yet: using an untrained adapter, answers come from the backbone alone"


def load_model(adapter: str = "default", backbone: str | None = None, *, trust_remote_code: bool = False) -> LCIRCModel:
    """The shipped adapter, an adapter directory, or (while none is shipped) an untrained one with a warning.

    The untrained fallback is seeded, so its fingerprint is the same in every process: a memory saved by one
    run (``lcirc compress``) is accepted by the next (``lcirc ask``). ``fork_rng`` leaves the caller's RNG alone.
    """
    if adapter != "default":
        return LCIRCModel.from_pretrained(adapter, backbone=backbone, trust_remote_code=trust_remote_code)
    try:
        return LCIRCModel.from_pretrained("default", backbone=backbone, trust_remote_code=trust_remote_code)
    except AdapterNotFoundError:
        warnings.warn(NO_ADAPTER_WARNING, UserWarning, stacklevel=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        return LCIRCModel.from_backbone(backbone or DEFAULT_BACKBONE, trust_remote_code=trust_remote_code)
