"""What ``ChatLCIRC`` and ``LCIRC`` share: their fields, how a call's kwargs become generation settings,
and how LangChain messages become chat-template messages.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, ChatMessage
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, EmptyInputError, UnsupportedFormatError
from ..model.lcirc_model import LCIRCModel, Memories
from ..model.loading import load_model
from ._generation import GenerationSettings

# LangChain message types -> chat-template roles.
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function"}
# Content blocks that carry something other than text, which the model cannot read.
_MEDIA_BLOCKS = {"image", "image_url", "audio", "input_audio", "video", "file"}
# Call kwargs that LangChain itself may add and that are not generation parameters.
_FRAMEWORK_KWARGS = {"stream"}
_SETTINGS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "timeout")


def message_text(message: BaseMessage) -> str:
    """The text of a message; media content blocks are refused (the model reads text only)."""
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") in _MEDIA_BLOCKS and message.type != "ai":
            raise UnsupportedFormatError(
                f"LCIRC models read text only; a {message.type} message has a {block.get('type')!r} content block"
            )
    return "".join(parts)


def to_chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """``[{"role", "content"}]`` for the tokenizer's chat template.

    Consecutive messages with the same role are joined with a blank line: several chat templates
    (Llama-2, Mistral, Gemma) refuse roles that do not alternate, and no template loses anything by it.

    Raises:
        EmptyInputError: there are no messages, or none has any text.
    """
    chat: list[dict[str, str]] = []
    for message in messages:
        role = message.role if isinstance(message, ChatMessage) else _ROLES.get(message.type)
        if role is None:
            raise UnsupportedFormatError(f"LCIRC chat models cannot read a {type(message).__name__} ({message.type!r})")
        text = message_text(message)
        if chat and chat[-1]["role"] == role:
            chat[-1]["content"] += "\n\n" + text
        else:
            chat.append({"role": role, "content": text})
    if not any(m["content"].strip() for m in chat):
        raise EmptyInputError("the chat has no text: every message is empty")
    return chat


def last_user_text(chat: Sequence[dict[str, str]]) -> str | None:
    """The question that conditions QD compression: the last user turn."""
    return next((m["content"] for m in reversed(chat) if m["role"] == "user"), None)


class LCIRCParams(BaseModel):
    """Fields shared by the LangChain components that generate (mixed into ``ChatLCIRC`` and ``LCIRC``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True, protected_namespaces=())

    model: LCIRCModel | None = Field(default=None, exclude=True, repr=False)
    """A ready ``LCIRCModel``. When not given, one is loaded from ``adapter`` and ``backbone``."""
    adapter: str | None = None
    """``"default"`` (the adapter shipped in the package; the default) or an adapter directory; used without
    ``model``. While no default adapter is shipped, ``"default"`` is an untrained one, with a warning."""
    backbone: str | None = None
    """Backbone name, folder or GGUF file; default: the one recorded in the adapter."""
    model_name: str | None = None
    """Name reported in traces and ``response_metadata``; default: ``<backbone>+lcirc-<adapter hash>``."""
    max_new_tokens: int = Field(default=256, alias="max_tokens", ge=1)
    """Most tokens to generate (``max_tokens`` is accepted too, LangChain's standard name)."""
    temperature: float = Field(default=0.0, ge=0.0)
    """0 decodes greedily (deterministic); above 0 samples."""
    top_p: float | None = None
    """Nucleus sampling (only when ``temperature > 0``)."""
    top_k: int | None = None
    """Top-k sampling (only when ``temperature > 0``)."""
    repetition_penalty: float | None = None
    """Penalty on tokens already generated (``transformers``' ``repetition_penalty``; 1.0 is none)."""
    stop: list[str] | None = None
    """Default stop sequences; the output ends before the first one. A call's ``stop=`` replaces them."""
    timeout: float | None = None
    """Stop generating after this many seconds (``transformers``' ``max_time``)."""
    max_retries: int = 0
    """Accepted for the standard interface; a local model is never retried."""
    streaming: bool = False
    """Whether ``invoke`` streams internally (to callbacks)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """More keyword arguments for ``transformers``' ``generate`` (e.g. ``no_repeat_ngram_size``)."""

    def __init__(self, **data: Any) -> None:
        # Loading and checks run after pydantic's validation, not in validators: pydantic would turn our
        # ValueError subclasses (ConfigError, ...) into a generic ValidationError.
        super().__init__(**self._collect_model_kwargs(data))
        if self.model is not None and (self.adapter is not None or self.backbone is not None):
            raise ConfigError("pass either model= or adapter=/backbone=, not both")
        # The shared loader: the shipped adapter, an adapter directory, or (while none is shipped) a seeded
        # untrained adapter with an UntrainedAdapterWarning.
        self.model = load_model(self.adapter or "default", self.backbone, model=self.model)
        if self.model_name is None:
            backbone = Path(self.model.backbone_name).name or str(self.model.signature.get("model_type", "model"))
            self.model_name = f"{backbone}+lcirc-{self.model.adapter_fingerprint[:8]}"

    @classmethod
    def _collect_model_kwargs(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Unknown constructor arguments go to ``model_kwargs`` with a warning (as partner packages do)."""
        known = set()
        for name, info in cls.model_fields.items():
            known.update({name, info.alias} if info.alias else {name})
        extra = {k: v for k, v in values.items() if k not in known}
        if not extra:
            return values
        model_kwargs = dict(values.get("model_kwargs") or {})
        for key, value in extra.items():
            if key in model_kwargs:
                raise ConfigError(f"{key} was given both as an argument and in model_kwargs")
            warnings.warn(
                f"{key} is not a field of {cls.__name__}; it was moved to model_kwargs (passed to generate)",
                UserWarning,
                stacklevel=3,
            )
            model_kwargs[key] = value
        return {**{k: v for k, v in values.items() if k not in extra}, "model_kwargs": model_kwargs}

    @property
    def lcirc_model(self) -> LCIRCModel:
        assert self.model is not None  # set in __init__
        return self.model

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with the backbone's own tokenizer (LangChain's default would fetch GPT-2's)."""
        return list(self.lcirc_model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _settings(self, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[GenerationSettings, Memories]:
        """Generation settings for one call: the fields, overridden by the call's (or ``bind``'s) kwargs.

        ``memory=`` (a ``CompressedMemory`` or a list of them) is the compressed documents the answer reads.
        Any other unknown kwarg goes to ``transformers``' ``generate``, which rejects what it does not know.
        """
        kwargs = {k: v for k, v in kwargs.items() if k not in _FRAMEWORK_KWARGS}
        memory = kwargs.pop("memory", None)
        if "model" in kwargs:
            raise ConfigError(f"{type(self).__name__} runs one local model; build another instance to use {kwargs['model']!r}")
        if "max_tokens" in kwargs:
            kwargs["max_new_tokens"] = kwargs.pop("max_tokens")
        values = {name: kwargs.pop(name, getattr(self, name)) for name in _SETTINGS}
        stops = stop if stop is not None else (self.stop or [])
        return GenerationSettings(**values, stop=list(stops), extra={**self.model_kwargs, **kwargs}), memory

    def _ls_values(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The values of LangChain's standard tracing parameters (``ls_*``) for one call."""
        values: dict[str, Any] = {
            "ls_provider": "lcirc",
            "ls_model_name": kwargs["model"] if isinstance(kwargs.get("model"), str) else self.model_name,
            "ls_temperature": kwargs.get("temperature", self.temperature),
            "ls_max_tokens": kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_new_tokens)),
        }
        stops = stop if stop is not None else self.stop
        if stops:
            values["ls_stop"] = list(stops)
        return values

    def _params(self) -> dict[str, Any]:
        """What identifies this component's outputs (traces, caches)."""
        return {
            "model_name": self.model_name,
            "adapter_fingerprint": self.lcirc_model.adapter_fingerprint,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "stop": self.stop,
            "model_kwargs": self.model_kwargs,
        }
