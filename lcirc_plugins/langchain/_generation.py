"""Generation shared by ``ChatLCIRC`` and ``LCIRC``: prompt + memories in, text and token counts out.

Framework-free on purpose (no LangChain import): from a
:class:`~lcirc_plugins.model.lcirc_model.PreparedPrompt` (``LCIRCModel.prepare_prompt``) it runs
``LCIRCModel.generate`` with or without streaming, applies stop sequences the LangChain way (the output
ends before the first stop sequence, which is not included), and counts tokens for usage metadata.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..model.lcirc_model import LCIRCModel, PreparedPrompt


@dataclass
class GenerationSettings:
    """One call's generation parameters, resolved from the component's fields and the call's kwargs."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    timeout: float | None = None
    stop: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 is greedy decoding), got {self.temperature!r}")
        self.stop = [s for s in self.stop if s]

    def generate_kwargs(self, model: LCIRCModel) -> dict[str, Any]:
        """Keyword arguments for ``transformers``' ``generate`` (besides ``max_new_tokens``)."""
        kwargs: dict[str, Any] = {"do_sample": self.temperature > 0}
        if self.temperature > 0:  # top_p / top_k only mean something when sampling
            kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
            if self.top_k is not None:
                kwargs["top_k"] = self.top_k
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.timeout is not None:
            kwargs["max_time"] = float(self.timeout)
        if self.stop:  # stop generating early; the text is cut at the stop sequence afterwards
            kwargs["stop_strings"] = list(self.stop)
            kwargs["tokenizer"] = model.tokenizer
        kwargs.update(self.extra)
        return kwargs


@dataclass
class Generation:
    """The answer text and what it cost."""

    text: str
    output_tokens: int
    input_tokens: int
    compressed_tokens: int
    finish_reason: str

    def usage_metadata(self) -> dict[str, Any]:
        """LangChain ``UsageMetadata``: every input token counts, compressed ones too (also broken out)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "input_token_details": {"compressed": self.compressed_tokens},
        }


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to (not including) the earliest stop sequence, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    if not hits:
        return text, False
    return text[: min(hits)].rstrip(), True


def _finish_reason(stopped: bool, output_tokens: int, max_new_tokens: int) -> str:
    return "length" if not stopped and output_tokens >= max_new_tokens else "stop"


def generate(model: LCIRCModel, prepared: PreparedPrompt, settings: GenerationSettings) -> Generation:
    """Generate the whole answer at once."""
    text, n = model.generate_text(prepared, max_new_tokens=settings.max_new_tokens, **settings.generate_kwargs(model))
    text, stopped = cut_at_stop(text, settings.stop)
    return Generation(
        text, n, prepared.input_tokens, prepared.compressed_tokens, _finish_reason(stopped, n, settings.max_new_tokens)
    )


class _TextAssembler:
    """Turns streamed pieces into the same text ``generate`` returns: stripped, and cut before a stop sequence.

    Text that might be the start of a stop sequence, or trailing whitespace, is held back until the next
    piece shows what it is; the concatenated output therefore equals the non-streaming answer exactly.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = [s for s in stop if s]
        self.pending = ""
        self.started = False
        self.stopped = False

    def _held_back(self) -> int:
        """Length of the longest end of ``pending`` that is a proper start of a stop sequence."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(s[:n]):
                    best = n
                    break
        return best

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        if not self.started:
            self.pending = self.pending.lstrip()
            if not self.pending:
                return ""
            self.started = True
        text, stopped = cut_at_stop(self.pending, self.stop)
        if stopped:
            self.pending, self.stopped = "", True
            return text
        ready = self.pending[: len(self.pending) - self._held_back()].rstrip()
        self.pending = self.pending[len(ready) :]
        return ready

    def finish(self) -> str:
        text, self.pending = ("" if self.stopped else self.pending.rstrip()), ""
        return text


class TextStream:
    """Iterate over the answer's text pieces; afterwards ``result`` holds the :class:`Generation`.

    Built on ``LCIRCModel.stream_text`` (which stops generating when the stream is closed); this adds the
    LangChain stop sequences, cancelling generation as soon as one appears.
    """

    def __init__(self, model: LCIRCModel, prepared: PreparedPrompt, settings: GenerationSettings) -> None:
        self.model, self.prepared, self.settings = model, prepared, settings
        self.result: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        prepared, settings = self.prepared, self.settings
        stream = self.model.stream_text(prepared, max_new_tokens=settings.max_new_tokens, **settings.generate_kwargs(self.model))
        assembler = _TextAssembler(settings.stop)
        emitted: list[str] = []
        try:
            for piece in stream:
                text = assembler.feed(piece)
                if text:
                    emitted.append(text)
                    yield text
                if assembler.stopped:
                    stream.cancel()
            tail = assembler.finish()
            if tail:
                emitted.append(tail)
                yield tail
        finally:
            stream.close()
        n = len(stream.new_tokens)
        self.result = Generation(
            "".join(emitted),
            n,
            prepared.input_tokens,
            prepared.compressed_tokens,
            _finish_reason(assembler.stopped, n, settings.max_new_tokens),
        )
