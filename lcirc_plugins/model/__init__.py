"""The LCIRC model: recurrent compression, gated cross-attention injection, memories and adapters."""

from .._lazy import lazy_exports

# Lazy: importing a light submodule (the backbone cache, say) must not pull in torch through this package.
__getattr__ = lazy_exports(
    __name__,
    {
        "DEFAULT_BACKBONE": ".backbone",
        "CompressedMemory": ".memory",
        "LCIRCAdapter": ".adapter",
        "LCIRCConfig": ".config",
        "LCIRCModel": ".lcirc_model",
        "load_backbone": ".backbone",
    },
)

__all__ = ["DEFAULT_BACKBONE", "CompressedMemory", "LCIRCAdapter", "LCIRCConfig", "LCIRCModel", "load_backbone"]
