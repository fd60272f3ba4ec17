"""One error hierarchy for the whole package.

Every error a user can cause is an ``LCIRCError`` subclass with a message that says what was wrong and
what to do, so integrations (LlamaIndex, LangChain, the app) can catch one type and show the message.
"""

from __future__ import annotations


class LCIRCError(Exception):
    """Base class of every error raised on purpose by lcirc_plugins."""


class ConfigError(LCIRCError, ValueError):
    """An ``LCIRCConfig`` field has an invalid value."""


class EmptyInputError(LCIRCError, ValueError):
    """The text (or file) to compress or the question is empty."""


class BinaryInputError(LCIRCError, ValueError):
    """The input is not text (NUL bytes, undecodable bytes, mostly control characters)."""


class UnsupportedFormatError(LCIRCError, ValueError):
    """A file has an extension the document loader does not read."""


class InputTooLongError(LCIRCError, ValueError):
    """A query or prompt does not fit in the decoder window."""


class InputTooLargeError(LCIRCError, ValueError):
    """An upload or file is over the configured size cap."""


class AdapterMismatchError(LCIRCError, ValueError):
    """An adapter was made for a different backbone (hidden size, layer count, vocabulary)."""


class MemoryMismatchError(LCIRCError, ValueError):
    """A compressed memory was made by another adapter or backbone than the model using it."""


class CorruptFileError(LCIRCError, ValueError):
    """A checkpoint or memory file is truncated, edited or not in the expected format."""


class UnsupportedBackboneError(LCIRCError, ValueError):
    """The backbone's decoder layers could not be found, or it is not a decoder-only LM."""


class BackboneNotFoundError(LCIRCError, FileNotFoundError):
    """The backbone name or path does not resolve to a model that can be loaded offline."""


class MissingDependencyError(LCIRCError, ImportError):
    """An optional dependency (an extra) is needed for this feature and is not installed."""


class AdapterNotFoundError(LCIRCError, FileNotFoundError):
    """An adapter name or directory does not exist."""


class InvalidRequestError(LCIRCError, ValueError):
    """A call to the app's API has a field of the wrong type or out of range (e.g. a dict where a book key goes)."""
