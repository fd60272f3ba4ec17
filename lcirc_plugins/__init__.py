"""lcirc-plugins: QD-LCIRC long-context memory for any Hugging Face causal LM."""

__version__ = "0.1.0"

from ._lazy import lazy_exports
from .errors import LCIRCError

# The model classes import torch and transformers: loaded on first use, so light commands start fast.
__getattr__ = lazy_exports(__name__, {"CompressedMemory": ".model", "LCIRCConfig": ".model", "LCIRCModel": ".model"})

__all__ = ["CompressedMemory", "LCIRCConfig", "LCIRCError", "LCIRCModel", "__version__"]
