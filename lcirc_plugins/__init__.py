"""lcirc-plugins: QD-LCIRC long-context memory for any Hugging Face causal LM."""

__version__ = "0.1.0"

from .errors import LCIRCError
from .model import CompressedMemory, LCIRCConfig, LCIRCModel

__all__ = ["CompressedMemory", "LCIRCConfig", "LCIRCError", "LCIRCModel", "__version__"]
