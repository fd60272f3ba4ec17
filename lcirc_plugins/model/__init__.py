"""The LCIRC model: recurrent compression, gated cross-attention injection, memories and adapters."""

from .adapter import LCIRCAdapter
from .backbone import DEFAULT_BACKBONE, load_backbone
from .config import LCIRCConfig
from .lcirc_model import LCIRCModel
from .memory import CompressedMemory

__all__ = ["DEFAULT_BACKBONE", "CompressedMemory", "LCIRCAdapter", "LCIRCConfig", "LCIRCModel", "load_backbone"]
