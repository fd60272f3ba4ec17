"""Deprecated: renamed :mod:`lcirc_plugins.eval.datasets` (benchmark dataset loaders, not the ``benchmarks/`` folder)."""

import warnings

from .datasets import *
from .datasets import FORMATS, QARecord, load_benchmark, score  # noqa: F401

warnings.warn("lcirc_plugins.eval.benchmarks is now lcirc_plugins.eval.datasets", DeprecationWarning, stacklevel=2)
