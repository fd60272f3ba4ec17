"""Deprecated: moved to :mod:`lcirc_plugins.model.passages` (provenance, in the model layer, ranks with it)."""

import warnings

from .model.passages import Passage, bm25_scores, passages, rank_passages, words

warnings.warn("lcirc_plugins.passages moved to lcirc_plugins.model.passages", DeprecationWarning, stacklevel=2)

__all__ = ["Passage", "bm25_scores", "passages", "rank_passages", "words"]
