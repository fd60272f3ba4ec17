"""``LCIRCLLM`` inside LlamaIndex's own query engines (SummaryIndex, VectorStoreIndex), and as ``Settings.llm``."""

from __future__ import annotations

import asyncio

from llama_index.core import Document, SummaryIndex, VectorStoreIndex

# MockEmbedding is llama-index-core's test embedding (constant vectors). Embeddings are not under test here:
# the LLM is, and every LLM call below goes to a real LCIRCLLM.
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import ChatMessage


def test_summary_index_as_settings_llm_sends_the_whole_document_in_one_call_through_memory(
    make_llm, sample_text, llm_events, clean_settings
):
    llm = make_llm(max_new_tokens=8)
    clean_settings.llm = llm
    document = Document(text=sample_text[:6000], metadata={"title": "Treasure Island"})
    engine = SummaryIndex.from_documents([document]).as_query_engine()  # no llm=: Settings.llm is used
    response = engine.query("Who is the captain?")

    starts, ends = llm_events.of("LLMChatStartEvent"), llm_events.of("LLMChatEndEvent")
    assert len(starts) == len(ends) == 1, "a truthful context_window lets the synthesizer send one call, not a refine chain"
    sent = starts[0].messages
    assert sample_text[1000:1100] in "".join(m.content or "" for m in sent), "the document's middle is in the prompt"
    usage = ends[0].response.raw["usage"]
    template = [{"role": m.role.value, "content": m.content or ""} for m in sent]
    full = llm.model.tokenizer.apply_chat_template(template, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    assert usage["compressed_tokens"] > 0 and usage["compressed_tokens"] + usage["decoder_tokens"] == usage[
        "prompt_tokens"
    ] == len(full)
    assert response.response == ends[0].response.message.content
    assert [n.node.ref_doc_id for n in response.source_nodes] == [document.doc_id] * len(response.source_nodes)


def test_vector_store_index_query_engine_sync_streaming_and_async(make_llm, llm_events):
    llm = make_llm(max_new_tokens=8)
    documents = [
        Document(text="Jim Hawkins lives at the Admiral Benbow inn with his mother.", id_="jim"),
        Document(text="Long John Silver is the ship's cook and has one leg.", id_="silver"),
        Document(text="Captain Smollett commands the Hispaniola.", id_="smollett"),
    ]
    index = VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))
    question = "Who is the cook?"

    response = index.as_query_engine(llm=llm, similarity_top_k=2).query(question)
    assert len(response.source_nodes) == 2
    assert {n.node.ref_doc_id for n in response.source_nodes} <= {"jim", "silver", "smollett"}
    (start,) = llm_events.of("LLMChatStartEvent")
    sent = "".join(m.content or "" for m in start.messages)
    assert all(n.node.get_content() in sent for n in response.source_nodes), "the retrieved chunks are the context"
    assert question in sent
    # The engine's answer is exactly what the LLM gives for the messages the engine sent.
    assert response.response == llm.chat(start.messages).message.content

    streaming = index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True).query(question)
    assert "".join(streaming.response_gen).strip() == response.response

    async def ask() -> tuple[str, str]:
        answered = await index.as_query_engine(llm=llm, similarity_top_k=2).aquery(question)
        streamed = await index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True).aquery(question)
        pieces = [piece async for piece in streamed.async_response_gen()]
        return answered.response, "".join(pieces)

    answered, streamed = asyncio.run(ask())
    assert answered == response.response and streamed.strip() == response.response


def test_lcirc_llm_works_as_settings_llm_for_chat(make_llm, clean_settings):
    llm = make_llm(max_new_tokens=4)
    clean_settings.llm = llm
    assert clean_settings.llm is llm
    assert clean_settings.llm.chat([ChatMessage(role="user", content="Hello")]).raw["usage"]["completion_tokens"] == 4
