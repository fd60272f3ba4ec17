"""ChatLCIRC and LCIRC beyond the standard suites: chat template, token accounting, compression of long
inputs, documents read through memory, bound parameters, stop sequences, streaming and real async."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, ChatMessage, HumanMessage, SystemMessage
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, LlamaConfig

from lcirc_plugins import LCIRCModel
from lcirc_plugins.errors import AdapterNotFoundError, ConfigError, EmptyInputError, MemoryMismatchError, UnsupportedFormatError
from lcirc_plugins.langchain import LCIRC, ChatLCIRC
from lcirc_plugins.langchain._common import to_chat_messages
from lcirc_plugins.langchain._generation import _TextAssembler, cut_at_stop
from lcirc_plugins.model.lcirc_model import DEFAULT_ADAPTER_DIR, PreparedPrompt
from lcirc_plugins.model.loading import UntrainedAdapterWarning

QUESTION = "Who called roughly for a glass of rum?"


def template_ids(model: LCIRCModel, chat: list[dict[str, str]]) -> list[int]:
    """The prompt exactly as the tokenizer's own chat template renders it (assistant turn open)."""
    return list(
        model.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    )


def test_messages_map_to_chat_template_roles_and_repeated_roles_merge():
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("hello"),
        HumanMessage([{"type": "text", "text": "again"}]),
        AIMessage("hi"),
        ChatMessage(role="user", content="who?"),
    ]
    assert to_chat_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello\n\nagain"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "who?"},
    ]


def test_usage_counts_every_prompt_token_and_every_generated_token(lc_model):
    chat = ChatLCIRC(model=lc_model, max_new_tokens=6, model_kwargs={"min_new_tokens": 6})
    reply = chat.invoke([SystemMessage("Be brief."), HumanMessage(QUESTION)])
    prompt = template_ids(lc_model, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}])
    assert reply.usage_metadata == {
        "input_tokens": len(prompt),
        "output_tokens": 6,
        "total_tokens": len(prompt) + 6,
        "input_token_details": {"compressed": 0},
    }
    assert reply.response_metadata["model_name"] == chat.model_name and reply.response_metadata["finish_reason"] == "length"
    assert chat.get_num_tokens_from_messages([SystemMessage("Be brief."), HumanMessage(QUESTION)]) == len(prompt)
    assert chat.get_token_ids(QUESTION) == lc_model.tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    assert QUESTION not in reply.content, "the prompt is never echoed back"


def test_a_conversation_longer_than_the_window_is_compressed_not_truncated(lc_model, sample_text):
    content = sample_text[:6000] + "\n\n" + QUESTION
    chat = ChatLCIRC(model=lc_model, max_new_tokens=8)
    reply = chat.invoke([HumanMessage(content)])
    prompt = template_ids(lc_model, [{"role": "user", "content": content}])
    window = lc_model.config.window - 8
    assert reply.usage_metadata["input_tokens"] == len(prompt), "every token is counted: none was dropped"
    assert reply.usage_metadata["input_token_details"]["compressed"] == len(prompt) - window > 1000
    assert reply.response_metadata["compressed_tokens"] == len(prompt) - window
    prepared = lc_model.prepare_prompt([{"role": "user", "content": content}], max_new_tokens=8)
    assert prepared.input_ids[0].tolist() == prompt[-window:] and prepared.rows is not None
    assert reply.content == lc_model.generate_text(prepared, max_new_tokens=8)[0]
    truncated = PreparedPrompt(prepared.input_ids, None, 0)
    assert reply.content != lc_model.generate_text(truncated, max_new_tokens=8)[0], "truncating would have answered differently"


def test_documents_attached_with_memory_are_read_and_counted(lc_model, book_memory):
    chat = ChatLCIRC(model=lc_model, max_new_tokens=8)
    plain = chat.invoke(QUESTION)
    with_book = chat.invoke(QUESTION, memory=book_memory)
    bound = chat.bind(memory=[book_memory]).invoke(QUESTION)
    prompt = template_ids(lc_model, [{"role": "user", "content": QUESTION}])
    assert with_book.usage_metadata["input_tokens"] == len(prompt) + book_memory.num_tokens
    assert with_book.usage_metadata["input_token_details"]["compressed"] == book_memory.num_tokens
    assert with_book.content != plain.content, "the memory changes the answer (gates are open on the test model)"
    assert bound.content == with_book.content


def test_a_memory_from_another_adapter_is_refused_before_generating(lc_model, foreign_memory):
    chat = ChatLCIRC(model=lc_model, max_new_tokens=4)
    with pytest.raises(MemoryMismatchError, match="adapter"):
        chat.invoke(QUESTION, memory=foreign_memory)
    with pytest.raises(MemoryMismatchError, match="adapter"):
        list(chat.stream(QUESTION, memory=foreign_memory))


def test_bound_parameters_reach_generation(lc_model):
    chat = ChatLCIRC(model=lc_model, max_new_tokens=12)
    short = chat.bind(max_new_tokens=3, min_new_tokens=3).invoke(QUESTION)
    assert short.usage_metadata["output_tokens"] == 3
    assert chat.bind(max_tokens=5, min_new_tokens=5).invoke(QUESTION).usage_metadata["output_tokens"] == 5
    with pytest.raises(ConfigError, match="max_new_tokens"):
        chat.invoke(QUESTION, max_new_tokens=0)
    sampled = [chat.invoke(QUESTION, temperature=1.5, top_k=50, max_new_tokens=6).content for _ in range(3)]
    greedy = {chat.invoke(QUESTION, max_new_tokens=6).content for _ in range(2)}
    assert len(greedy) == 1, "temperature 0 is greedy and deterministic"
    assert set(sampled) != greedy, "temperature > 0 samples"


def test_stop_sequences_cut_the_output_in_invoke_and_stream(lc_model):
    chat = ChatLCIRC(model=lc_model, max_new_tokens=16, model_kwargs={"min_new_tokens": 16})
    full = chat.invoke(QUESTION).content
    words = full.split()
    stop = words[len(words) // 2]
    expected = full[: full.index(stop)].rstrip()
    stopped = chat.bind(stop=[stop]).invoke(QUESTION)
    assert stopped.content == expected and stop not in stopped.content
    assert stopped.response_metadata["finish_reason"] == "stop"
    assert "".join(c.text for c in chat.stream(QUESTION, stop=[stop])) == expected
    assert (
        ChatLCIRC(model=lc_model, max_new_tokens=16, stop=[stop], model_kwargs={"min_new_tokens": 16}).invoke(QUESTION).content
        == expected
    )


def test_stream_adds_up_to_invoke_with_usage_on_the_last_chunk(lc_model, book_memory):
    chat = ChatLCIRC(model=lc_model, max_new_tokens=10)
    reply = chat.invoke(QUESTION, memory=book_memory)
    chunks = list(chat.stream(QUESTION, memory=book_memory))
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert [c for c in chunks if c.usage_metadata] == [chunks[-1]] and chunks[-1].chunk_position == "last"
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    assert full.content == reply.content
    assert full.usage_metadata == reply.usage_metadata
    assert full.response_metadata["model_name"] == chat.model_name


async def test_async_runs_off_the_event_loop(lc_model):
    chat = ChatLCIRC(model=lc_model, max_new_tokens=12, model_kwargs={"min_new_tokens": 12})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        reply = await chat.ainvoke(QUESTION)
        during_invoke = ticks
        pieces = [c.text async for c in chat.astream(QUESTION)]
    finally:
        task.cancel()
    assert during_invoke >= 3, "the event loop kept running while the model generated"
    assert reply.content == chat.invoke(QUESTION).content == "".join(pieces)
    both = await chat.abatch([QUESTION, "Hello"])
    assert [m.content for m in both] == [reply.content, chat.invoke("Hello").content]


def test_empty_chats_and_non_text_content_are_refused(lc_model):
    chat = ChatLCIRC(model=lc_model, max_new_tokens=4)
    with pytest.raises(EmptyInputError, match="no text"):
        chat.invoke("   ")
    with pytest.raises(EmptyInputError):
        chat.invoke([])
    with pytest.raises(UnsupportedFormatError, match="text only"):
        chat.invoke([HumanMessage([{"type": "image", "url": "https://example.com/map.png"}])])


def test_unknown_arguments_go_to_generate_with_a_warning(lc_model):
    with pytest.warns(UserWarning, match="no_repeat_ngram_size"):
        chat = ChatLCIRC(model=lc_model, max_new_tokens=8, no_repeat_ngram_size=1)
    assert chat.model_kwargs == {"no_repeat_ngram_size": 1}
    ids = lc_model.tokenizer(chat.invoke(QUESTION).content, add_special_tokens=False)["input_ids"]
    assert ids, "generation ran with the extra argument"
    with pytest.raises(ValueError, match="not_a_generate_argument"):
        chat.invoke(QUESTION, not_a_generate_argument=1)


def test_llm_continues_plain_text_with_usage_in_generation_info(lc_model, book_memory):
    llm = LCIRC(model=lc_model, max_new_tokens=5, model_kwargs={"min_new_tokens": 5})
    prompt = "The old sea dog at the Admiral Benbow"
    result = llm.generate([prompt, "Yo-ho-ho"], memory=book_memory)
    info = result.generations[0][0].generation_info
    n_prompt = len(lc_model.tokenizer(prompt, add_special_tokens=True)["input_ids"])
    assert info == {
        "input_tokens": n_prompt + book_memory.num_tokens,
        "compressed_tokens": book_memory.num_tokens,
        "output_tokens": 5,
        "finish_reason": "length",
    }
    assert result.llm_output["token_usage"]["output_tokens"] == 10
    text = llm.invoke(prompt, memory=book_memory)
    assert text == result.generations[0][0].text and not text.startswith(prompt)
    assert "".join(llm.stream(prompt, memory=book_memory)) == text
    assert asyncio.run(llm.ainvoke(prompt, memory=book_memory)) == text
    assert llm._get_ls_params()["ls_model_type"] == "llm"


def test_model_or_adapter_but_not_both(lc_model, tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        ChatLCIRC(model=lc_model, adapter="default")
    with pytest.raises(ValidationError, match="LCIRCModel"):
        ChatLCIRC(model="not a model")
    with pytest.raises(AdapterNotFoundError, match="does not exist"):
        ChatLCIRC(adapter=str(tmp_path / "no-such-adapter"))


def test_default_adapter_falls_back_to_an_untrained_one_with_a_warning(smollm2_tokenizer, tmp_path):
    if DEFAULT_ADAPTER_DIR.is_dir():
        pytest.skip("a default adapter is shipped: the untrained fallback does not apply")
    backbone_dir = Path(tmp_path) / "tiny-backbone"
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(backbone_dir)
    smollm2_tokenizer.save_pretrained(backbone_dir)
    with pytest.warns(UntrainedAdapterWarning, match="untrained"):
        chat = ChatLCIRC(adapter="default", backbone=str(backbone_dir), max_new_tokens=2)
    with pytest.warns(UntrainedAdapterWarning, match="untrained"):
        again = ChatLCIRC(backbone=str(backbone_dir), max_new_tokens=2)
    try:
        assert isinstance(chat.model, LCIRCModel) and chat.model_name.startswith("tiny-backbone+lcirc-")
        assert again.model_name == chat.model_name, "the untrained fallback is seeded: memories saved with it stay valid"
        with warnings.catch_warnings():
            warnings.simplefilter("error", UntrainedAdapterWarning)
            assert chat.invoke("Hello").usage_metadata["output_tokens"] <= 2
    finally:
        chat.lcirc_model.injector.detach()
        again.lcirc_model.injector.detach()


def test_compressed_memory_type_is_checked(lc_model):
    with pytest.raises(TypeError, match="CompressedMemory"):
        ChatLCIRC(model=lc_model, max_new_tokens=2).invoke(QUESTION, memory=["not a memory"])


@pytest.mark.parametrize(
    ("pieces", "stop", "expected"),
    [
        (["  Hel", "lo wo", "rld  ", " \n"], [], "Hello world"),
        (["The cap", "tain dr", "ank rum"], ["tain"], "The cap"),
        (["a b", "\n", "\nc"], ["\n\n"], "a b"),
        (
            ["x", "y", "z"],
            ["yz", "xy"],
            "",
        ),
        (["no stop ", "here"], ["stop!"], "no stop here"),
    ],
)
def test_streamed_text_is_stripped_and_cut_like_the_whole_answer(pieces, stop, expected):
    assembler = _TextAssembler(stop)
    streamed = "".join([assembler.feed(p) for p in pieces] + [assembler.finish()])
    assert streamed == expected == cut_at_stop("".join(pieces).strip(), stop)[0]
