"""Provenance from the adapter's weights: explicit attention maps, gate weighting, and spans back to the book."""

from __future__ import annotations

import math

import pytest
import torch
from support import one_torch_thread

from lcirc_plugins.model.provenance import best_window, evidence, memory_attention, token_attention


def test_explicit_attention_weights_reproduce_the_fused_attention():
    from lcirc_plugins.model.attention import CrossAttention

    torch.manual_seed(0)
    layer = CrossAttention(32, 24, 8)
    x, context = torch.randn(2, 5, 32), torch.randn(2, 7, 24)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    kv = layer.project_context(context)
    weights = layer.weights(x, kv, mask)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 5)) and weights[1, ..., 4:].abs().max() == 0
    by_hand = layer.to_out((weights @ kv[1]).transpose(1, 2).reshape(2, 5, -1))
    assert torch.allclose(by_hand, layer(x, kv, mask), atol=1e-5)


def test_closed_gates_attribute_nothing(make_lcirc, sample_text):
    model = make_lcirc("llama")
    with one_torch_thread():
        memory = model.compress(sample_text[:3000])
        weights = memory_attention(model, model.prompt_ids("Who is the captain?", 8), memory.features)
    assert weights.shape == (memory.num_vectors,) and weights.abs().max() == 0
    assert evidence(model, memory, memory.features, weights) == []


def test_each_open_layer_spreads_its_gate_over_the_memory(make_lcirc, sample_text):
    model = make_lcirc("llama", gate_init=0.5)
    with one_torch_thread():
        memory = model.compress(sample_text[:3000])
        weights = memory_attention(model, model.prompt_ids("Who is the captain?", 8), memory.features)
    layers = len(model.injector.blocks)
    assert (weights >= 0).all() and weights.sum().item() == pytest.approx(layers * math.tanh(0.5), rel=1e-4)


def test_recording_perceiver_attention_leaves_the_step_unchanged(make_lcirc, sample_text):
    model = make_lcirc("llama", gate_init=0.5)
    compressor = model.adapter.compressor
    ids = model.tokenizer(sample_text[:400], add_special_tokens=False, return_tensors="pt")["input_ids"][:, :32]
    segment = compressor.segment_features(model.embed_tokens(ids))
    layers: list[torch.Tensor] = []
    with torch.no_grad():
        plain = compressor.step(compressor.initial_state(1), segment)
        recorded = compressor.step(compressor.initial_state(1), segment, weights=layers)
    assert torch.equal(plain, recorded)
    assert len(layers) == model.config.perceiver_layers and layers[0].shape == (1, model.config.num_latents, 32)
    assert (layers[0].sum(-1) <= 1 + 1e-5).all(), "mass on the latents themselves is left out"


def test_evidence_quotes_the_most_read_segment_at_its_place_in_the_book(make_lcirc, sample_text):
    model = make_lcirc("llama", gate_init=0.5)
    text = sample_text[:4000]
    with one_torch_thread():
        memory = model.compress(text)
        weights = torch.zeros(memory.num_vectors)
        k = memory.num_latents
        weights[2 * k : 3 * k] = 1.0  # the answer read segment 2 only
        weights[4 * k] = 0.5
        found = evidence(model, memory, memory.features, weights, top_k=2, window_tokens=8)
        per_token = token_attention(model, memory, memory.features, 2, weights[2 * k : 3 * k])
    assert [e.segment for e in found] == [2, 4]
    assert found[0].weight == pytest.approx(k / (k + 0.5))
    assert text[found[0].start : found[0].end] == found[0].text, "character offsets point at the quote"
    seg_start, seg_end = memory.spans[2].tolist()
    assert seg_start <= found[0].start < found[0].end <= seg_end
    start, end = best_window(per_token, 8)
    assert per_token[start:end].sum() >= max(per_token[i : i + 8].sum() for i in range(len(per_token) - 7)) - 1e-6


def test_best_window_finds_the_heaviest_run():
    assert best_window(torch.tensor([0.0, 1.0, 0.0, 3.0, 3.0, 0.0]), 2) == (3, 5)
    assert best_window(torch.tensor([1.0, 2.0]), 5) == (0, 2)


def test_a_selected_slot_attributes_its_weight_to_its_own_token(make_lcirc, sample_text):
    model = make_lcirc("llama", reader="layer", lora_rank=4, tokens_per_slot=8, slot_selection=True, gate_init=0.5)
    with one_torch_thread():
        memory = model.compress(sample_text[:1000])
    rows = (memory.segment_of_rows() == 1).nonzero().flatten()
    weights = torch.zeros(memory.num_vectors)
    weights[rows[2]] = 1.0  # the answer read one selected token of segment 1
    per_token = token_attention(model, memory, memory.features, 1, weights[rows])
    chosen = int(memory.positions[rows[2]]) - model.config.segment_len
    assert per_token.argmax().item() == chosen and per_token.sum().item() == pytest.approx(1.0)
    assert per_token[chosen].item() == pytest.approx(1.0), "not spread over a window"
