"""``LCIRCLLM`` as a LlamaIndex LLM: metadata, chat template, long prompts through memory, streaming, async."""

from __future__ import annotations

import asyncio
import copy
import inspect

import pytest
from llama_index.core.base.llms.types import ChatMessage

from lcirc_plugins import LCIRCConfig, LCIRCModel
from lcirc_plugins.errors import AdapterNotFoundError, ConfigError, EmptyInputError, LCIRCError
from lcirc_plugins.llama_index import EFFECTIVE_CONTEXT_WINDOW, LCIRCLLM, UntrainedAdapterWarning
from lcirc_plugins.model.lcirc_model import DEFAULT_ADAPTER_DIR

USER = [ChatMessage(role="user", content="Who is Long John Silver?")]


def template_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The tokenizer's own chat template, called directly: what a correct integration must send."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


def test_metadata_tells_query_engines_the_truth(make_llm):
    llm = make_llm(max_new_tokens=16)
    meta = llm.metadata
    assert meta.context_window == EFFECTIVE_CONTEXT_WINDOW > 1000 * llm.model.config.window, (
        "the effective window, not the decoder's"
    )
    assert meta.num_output == 16
    assert meta.is_chat_model is True, "SmolLM2's tokenizer has a chat template"
    assert meta.is_function_calling_model is False
    assert meta.model_name.startswith("lcirc:") and llm.model.adapter_fingerprint[:12] in meta.model_name


def test_a_tokenizer_without_chat_template_is_not_a_chat_model(tiny_backbones, smollm2_tokenizer):
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = None
    model = LCIRCModel(
        tiny_backbones["gpt2"], tokenizer, LCIRCConfig(segment_len=64, max_segment_len=64, num_latents=4, head_dim=16, window=256)
    )
    try:
        llm = LCIRCLLM(model=model, max_new_tokens=4)
        assert llm.metadata.is_chat_model is False
        response = llm.complete("Question: who is the captain?\nAnswer:")
        assert response.raw["usage"]["prompt_tokens"] == len(tokenizer("Question: who is the captain?\nAnswer:")["input_ids"])
    finally:
        model.injector.detach()


def test_complete_and_chat_use_the_tokenizers_chat_template(make_llm):
    llm = make_llm()
    tokenizer = llm.model.tokenizer
    chat = llm.chat([ChatMessage(role="system", content="Be brief."), *USER])
    assert chat.raw["usage"]["prompt_tokens"] == len(
        template_ids(tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": USER[0].content}])
    )
    completion = llm.complete(USER[0].content)
    assert completion.raw["usage"]["prompt_tokens"] == len(
        template_ids(tokenizer, [{"role": "user", "content": USER[0].content}])
    )
    assert completion.raw["usage"]["compressed_tokens"] == 0
    assert completion.raw["usage"]["completion_tokens"] == 8
    # The same prompt through the model directly gives the same greedy text: nothing is echoed or altered.
    prepared = llm.model.prepare_prompt([{"role": "user", "content": USER[0].content}], max_new_tokens=8)
    assert completion.text == llm.model.generate_text(prepared, max_new_tokens=8)[0]
    assert llm.chat(USER).message.content == completion.text


def test_formatted_prompts_and_custom_completion_to_prompt_are_sent_as_text(make_llm):
    llm = make_llm()
    tokenizer = llm.model.tokenizer
    assert llm.complete("Q: who? A:", formatted=True).raw["usage"]["prompt_tokens"] == len(tokenizer("Q: who? A:")["input_ids"])
    custom = LCIRCLLM(model=llm.model, max_new_tokens=4, completion_to_prompt=lambda p: f"Question: {p}\nAnswer:")
    assert custom.complete("who?").raw["usage"]["prompt_tokens"] == len(tokenizer("Question: who?\nAnswer:")["input_ids"])


@pytest.mark.parametrize("via", ["complete", "chat"])
def test_a_prompt_longer_than_the_window_reaches_the_model_through_memory(make_llm, sample_text, via):
    llm = make_llm(max_new_tokens=8)
    window = llm.model.config.window
    long_text = sample_text[:4000] + "\n\nWho is the captain?"
    expected = template_ids(llm.model.tokenizer, [{"role": "user", "content": long_text}])
    assert len(expected) > 4 * window
    calls: list[int] = []
    handle = llm.model.adapter.gca["0"].register_forward_hook(lambda *args: calls.append(1))
    try:
        if via == "complete":
            usage = llm.complete(long_text).raw["usage"]
        else:
            usage = llm.chat([ChatMessage(role="user", content=long_text)]).raw["usage"]
        assert usage["compressed_tokens"] > 0
        assert usage["decoder_tokens"] == window - 8
        assert usage["compressed_tokens"] + usage["decoder_tokens"] == usage["prompt_tokens"] == len(expected), "no token dropped"
        assert calls, "the decoder layers read the memory (GCA blocks ran)"
        calls.clear()
        llm.complete("Hi")
        assert not calls, "a short prompt needs no memory"
    finally:
        handle.remove()


def test_streaming_yields_the_same_text_as_the_full_call(make_llm, sample_text):
    llm = make_llm(max_new_tokens=10)
    prompt = sample_text[:2000] + "\n\nWho is the captain?"
    full = llm.complete(prompt)
    chunks = list(llm.stream_complete(prompt))
    assert len(chunks) > 1
    assert "".join(c.delta for c in chunks).strip() == chunks[-1].text.strip() == full.text
    assert chunks[-1].raw["usage"]["compressed_tokens"] == full.raw["usage"]["compressed_tokens"] > 0
    chat_chunks = list(llm.stream_chat(USER))
    assert chat_chunks[-1].message.content.strip() == llm.chat(USER).message.content
    assert "".join(c.delta for c in chat_chunks) == chat_chunks[-1].message.content


def test_async_methods_run_in_a_worker_thread_without_blocking_the_loop(make_llm):
    llm = make_llm(max_new_tokens=12)
    expected = llm.complete(USER[0].content).text  # the same chat prompt as llm.chat(USER)

    async def main() -> dict[str, object]:
        ticks = 0
        running = True

        async def ticker() -> None:
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        seen: dict[str, object] = {}
        before = ticks
        seen["acomplete"] = (await llm.acomplete(USER[0].content)).text
        seen["ticks_during_acomplete"] = ticks - before
        seen["achat"] = (await llm.achat(USER)).message.content
        stream = await llm.astream_complete(USER[0].content)
        seen["is_async_gen"] = inspect.isasyncgen(stream)
        before = ticks
        seen["astream_complete"] = "".join([c.delta async for c in stream])
        seen["ticks_during_astream"] = ticks - before
        seen["astream_chat"] = "".join([c.delta async for c in await llm.astream_chat(USER)])
        running = False
        await task
        return seen

    seen = asyncio.run(main())
    assert seen["acomplete"] == seen["achat"] == expected
    assert seen["is_async_gen"] is True
    assert seen["astream_complete"].strip() == seen["astream_chat"].strip() == expected
    assert seen["ticks_during_acomplete"] > 0, "acomplete blocked the event loop"
    assert seen["ticks_during_astream"] > 0, "astream_complete blocked the event loop"


def test_bad_inputs_raise_lcirc_errors(make_llm):
    llm = make_llm()
    with pytest.raises(EmptyInputError, match="prompt is empty"):
        llm.complete("   ")
    with pytest.raises(EmptyInputError, match="no messages"):
        llm.chat([])
    with pytest.raises(EmptyInputError):
        asyncio.run(llm.acomplete(""))
    with pytest.raises(ConfigError, match="no room"):
        LCIRCLLM(model=llm.model, max_new_tokens=llm.model.config.window)
    with pytest.raises(ConfigError, match="not both"):
        LCIRCLLM("some/adapter", model=llm.model)
    with pytest.raises(AdapterNotFoundError, match="does not exist"):
        LCIRCLLM("/nonexistent/adapter")
    assert all(issubclass(e, LCIRCError) for e in (EmptyInputError, ConfigError, AdapterNotFoundError))


def test_the_default_adapter_falls_back_to_an_untrained_one_with_a_warning(tiny_backbones, smollm2_tokenizer):
    if DEFAULT_ADAPTER_DIR.is_dir():
        pytest.skip("a default adapter is shipped: the fallback is not used")
    llms = []
    try:
        for _ in range(2):
            with pytest.warns(UntrainedAdapterWarning, match="no default adapter is shipped"):
                llms.append(
                    LCIRCLLM(adapter="default", backbone=tiny_backbones["llama"], tokenizer=smollm2_tokenizer, max_new_tokens=4)
                )
        llm = llms[0]
        assert llm.model.backbone is tiny_backbones["llama"]
        assert llm.model.config == LCIRCConfig(gca_layers=llm.model.config.gca_layers), "the default configuration"
        assert llm.model.adapter_fingerprint == llms[1].model.adapter_fingerprint, (
            "same untrained adapter: saved memories stay usable"
        )
        assert llm.complete("Hi").raw["usage"]["completion_tokens"] == 4
    finally:
        for llm in llms:
            llm.model.injector.detach()


def test_real_smollm2_answers_through_its_chat_template(smollm2):
    backbone, tokenizer = smollm2
    model = LCIRCModel(backbone, tokenizer, LCIRCConfig(), backbone_name="smollm2-135m-instruct")
    try:
        llm = LCIRCLLM(model=model, max_new_tokens=12)
        reply = llm.chat([ChatMessage(role="user", content="What is the capital of France?")]).message.content
        assert "Paris" in reply, reply
        assert "capital of France?" not in reply and "<|im_start|>" not in reply, "an answer, not the prompt echoed back"
        streamed = "".join(chunk.delta for chunk in llm.stream_complete("What is the capital of France?"))
        assert streamed.strip() == reply
    finally:
        model.injector.detach()
