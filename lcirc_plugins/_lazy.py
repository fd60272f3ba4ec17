"""Lazy package exports (PEP 562), so ``lcirc --help`` and ``lcirc info`` do not pay for torch and transformers.

A package lists ``{public name: submodule}``; the submodule is imported the first time the name is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package + exports[name]`` on first access of ``name``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    return __getattr__
