"""Where the project's shared data lives (books, the training corpus, the haystack): one setting for every reader.

The folder is ``$LCIRC_SHARED_DATA``, by default ``../shared/data`` beside the repository checkout. Training
configs, demos, benchmarks and tests name files in it as ``@shared/books/...`` (:func:`expand_shared`), so
moving the data means setting one environment variable, not editing paths.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LCIRC_SHARED_DATA"
PREFIX = "@shared/"


def shared_data_dir() -> Path:
    """``$LCIRC_SHARED_DATA``, or ``../shared/data`` next to the checkout this package runs from."""
    return Path(os.environ.get(ENV_VAR) or Path(__file__).resolve().parents[3] / "shared" / "data")


def expand_shared(spec: str) -> str:
    """``spec`` with every ``@shared/`` replaced by the shared data folder (a data spec may list several paths)."""
    return spec.replace(PREFIX, f"{shared_data_dir()}/")
