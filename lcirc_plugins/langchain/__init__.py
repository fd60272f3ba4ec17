"""LangChain integration: ``ChatLCIRC`` and ``LCIRC`` models, a compressed-memory retriever, and a QA runnable.

Needs the ``langchain`` extra: ``pip install "lcirc-plugins[langchain]"``. Laid out like a LangChain partner
package: ``chat_models.py`` (ChatLCIRC), ``llms.py`` (LCIRC), ``retrievers.py`` (LCIRCMemoryRetriever),
``runnables.py`` (LCIRCMemoryQA).
"""

from __future__ import annotations

from ..errors import MissingDependencyError

try:
    import langchain_core  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        'the LangChain integration needs langchain-core: pip install "lcirc-plugins[langchain]"'
    ) from err

from .chat_models import ChatLCIRC
from .llms import LCIRC
from .retrievers import PROVENANCE_KEYS, LCIRCMemoryRetriever
from .runnables import LCIRCMemoryQA

__all__ = [
    "LCIRC",
    "PROVENANCE_KEYS",
    "ChatLCIRC",
    "LCIRCMemoryQA",
    "LCIRCMemoryRetriever",
]
