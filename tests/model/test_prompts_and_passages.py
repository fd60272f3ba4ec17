"""Long prompts go to memory instead of being cut; passages come back with their source spans."""

from __future__ import annotations

import pytest
import torch

from lcirc_plugins.errors import EmptyInputError, InputTooLongError
from lcirc_plugins.model.passages import bm25_scores, rank_passages


def test_a_prompt_longer_than_the_window_is_compressed_not_truncated(make_lcirc, sample_text):
    model = make_lcirc("llama", window=256)
    prompt = sample_text[:6000] + "\n\nQuestion: who is the captain?"
    prepared = model.prepare_prompt(prompt, max_new_tokens=16)
    ids = model.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    assert prepared.input_ids.shape[1] == 256 - 16
    assert prepared.compressed_tokens == len(ids) - (256 - 16)
    assert prepared.input_tokens == len(ids), "every prompt token is either compressed or in the window"
    assert prepared.input_ids[0].tolist() == ids[-(256 - 16) :], "the window keeps the prompt's end (the question)"
    expected = model.adapter.compressor.compress(model.embed_tokens, [torch.tensor(ids[: prepared.compressed_tokens])], 32)[0]
    assert torch.allclose(prepared.rows.features, expected)


def test_a_short_prompt_needs_no_memory(make_lcirc):
    prepared = make_lcirc("llama").prepare_prompt([{"role": "user", "content": "Hello there"}], max_new_tokens=8)
    assert prepared.rows is None and prepared.compressed_tokens == 0


def test_long_prompt_generation_reads_the_compressed_head(make_lcirc, sample_text):
    model = make_lcirc("llama", window=128, gate_init=0.5)
    head_a = model.prepare_prompt(sample_text[:3000] + " The end.", max_new_tokens=8)
    head_b = model.prepare_prompt(sample_text[3000:6000] + " The end.", max_new_tokens=8)
    text_a, n_a = model.generate_text(head_a, max_new_tokens=8, min_new_tokens=8)
    assert n_a == 8
    with torch.no_grad():
        logits_a = model(head_a.input_ids, memory=head_a.rows).logits[0, -1]
        logits_same_tail_other_head = model(head_a.input_ids, memory=head_b.rows).logits[0, -1]
    assert not torch.allclose(logits_a, logits_same_tail_other_head, atol=1e-4)
    assert "".join(model.stream_text(head_a, max_new_tokens=8, min_new_tokens=8)).strip() == text_a


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_prompts_are_refused(make_lcirc, prompt):
    with pytest.raises(EmptyInputError):
        make_lcirc("llama").prepare_prompt(prompt)


def test_max_new_tokens_beyond_the_window_is_refused(make_lcirc):
    with pytest.raises(InputTooLongError, match="no room"):
        make_lcirc("llama", window=256).prepare_prompt("Hi", max_new_tokens=256)


def test_bm25_prefers_the_document_that_contains_the_query_words():
    scores = bm25_scores("buried treasure map", ["the map of the buried treasure", "a ship at sea", "the old captain"])
    assert scores[0] > 0 and scores[1] == scores[2] == 0


def test_ranked_passages_carry_text_and_source_spans(make_lcirc, sample_text):
    model = make_lcirc("llama")
    fact = " The secret password of the Admiral Benbow inn is PARROT-8812. "
    cut = sample_text.index("\n\n", 12_000)
    text = sample_text[:cut] + fact + sample_text[cut:20_000]
    memory = model.compress(text)
    best = rank_passages(memory, model.tokenizer, "What is the secret password of the Admiral Benbow inn?", top_k=3)
    assert len(best) == 3 and best[0].score >= best[1].score >= best[2].score
    assert "PARROT-8812" in best[0].text
    assert text[best[0].start : best[0].end] == best[0].text
