"""Recurrent compression: appending, batching, provenance spans and query dependence."""

from __future__ import annotations

import itertools

import pytest
import torch

from lcirc_plugins.data.segmentation import tokenize_with_offsets


def _split_at_word(text: str, near: int) -> int:
    """An index just before the whitespace that precedes a word, where tokenization splits cleanly."""
    i = near
    while not (text[i].isspace() and not text[i + 1].isspace()):
        i += 1
    return i


def test_chunked_tokenization_equals_whole_text_tokenization(smollm2_tokenizer, sample_text):
    chunked = tokenize_with_offsets(smollm2_tokenizer, sample_text, chunk_chars=3000)
    whole = smollm2_tokenizer(sample_text, add_special_tokens=False)["input_ids"]
    assert chunked.ids.tolist() == whole
    assert sample_text[chunked.starts[100] : chunked.ends[100]] == smollm2_tokenizer.decode(whole[100])


def test_compressing_in_two_appended_calls_equals_one_call(make_lcirc, sample_text):
    model = make_lcirc("llama")
    text = sample_text[:6000]
    cut = _split_at_word(text, 2500)
    whole = model.compress(text)
    appended = model.compress(text[cut:], memory=model.compress(text[:cut]))
    assert whole.num_tokens % model.config.segment_len != 0, "the test needs a short last segment"
    assert torch.equal(appended.token_ids, whole.token_ids)
    assert torch.equal(appended.spans, whole.spans)
    assert torch.allclose(appended.features, whole.features, atol=1e-6, rtol=0)
    assert appended.num_chars == whole.num_chars == len(text)
    assert appended.content_sha256 == whole.content_sha256


def test_spans_cover_the_source_text_in_order(make_lcirc, sample_text):
    model = make_lcirc("llama")
    text = sample_text[:5000]
    memory = model.compress(text)
    spans = memory.spans.tolist()
    assert memory.features.shape == (memory.num_segments * 4, 64)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] <= b[0] + 1 for a, b in itertools.pairwise(spans)), "segments must not overlap"
    first = model.tokenizer.decode(memory.token_ids[: model.config.segment_len].tolist())
    assert text[spans[0][0] : spans[0][1]] == first


def _open_segment_encoder(model) -> None:
    """Give a new segment encoder non-zero output projections, as training would."""
    with torch.no_grad():
        for layer in model.adapter.compressor.segment_encoder:
            layer.attn.to_out.weight.normal_(0, 0.05)
            layer.ffn.down.weight.normal_(0, 0.05)


@pytest.mark.parametrize("encoder_layers", [0, 1])
def test_batched_compression_equals_one_text_at_a_time(make_lcirc, sample_text, encoder_layers):
    model = make_lcirc("qwen2-sliding", segment_encoder_layers=encoder_layers)
    _open_segment_encoder(model)  # padded last segments must not leak into real tokens' context
    texts = [sample_text[:700], sample_text[1000:4500], sample_text[5000:6100]]
    batched = model.compress_many(texts)
    for text, memory in zip(texts, batched):
        single = model.compress(text)
        assert single.features.shape == memory.features.shape
        assert torch.allclose(single.features, memory.features, atol=1e-5, rtol=0)
        assert torch.equal(single.spans, memory.spans)


def test_later_segments_see_earlier_ones_through_the_recurrence(make_lcirc, sample_text):
    model = make_lcirc("llama")
    a = model.compress(sample_text[:3000])
    b = model.compress("Completely different opening words here. " + sample_text[:3000])
    assert not torch.allclose(a.features[-4:], b.features[-4:], atol=1e-4)


def test_order_signal_distinguishes_segments(make_lcirc):
    model = make_lcirc("llama")
    features = torch.zeros(3 * 4, 64)
    states = model.adapter.compressor.memory_states(features)
    assert not torch.allclose(states[0], states[4]) and not torch.allclose(states[4], states[8])
    assert torch.equal(states[0], states[3]), "the same order vector for every latent of a segment"


@pytest.mark.parametrize("gate_init, changes", [(0.0, False), (0.5, True)])
def test_query_dependent_compression_depends_on_the_question(make_lcirc, sample_text, gate_init, changes):
    model = make_lcirc("llama", query_dependent=True, gate_init=gate_init)
    memory = model.compress(sample_text[:3000])
    first = model.memory_for_query(memory, "Who is the captain?")
    second = model.memory_for_query(memory, "What is buried on the island?")
    assert torch.allclose(first, memory.features, atol=1e-6) != changes
    assert (not torch.allclose(first, second, atol=1e-5)) == changes


def test_query_independent_model_ignores_the_question(make_lcirc, sample_text):
    model = make_lcirc("llama", gate_init=0.5)
    memory = model.compress(sample_text[:3000])
    assert model.memory_for_query(memory, "Who is the captain?") is memory.features


def test_progress_callback_reports_every_token(make_lcirc, sample_text):
    model = make_lcirc("llama")
    seen: list[tuple[int, int]] = []
    memory = model.compress(sample_text[:3000], progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (memory.num_tokens, memory.num_tokens)
    assert len(seen) == memory.num_segments


def test_a_new_segment_encoder_is_the_identity_until_trained(make_lcirc, sample_text):
    model = make_lcirc(segment_encoder_layers=2)
    compressor = model.adapter.compressor
    with_encoder = model.compress(sample_text[:1500]).features
    encoder, compressor.segment_encoder = compressor.segment_encoder, torch.nn.ModuleList()
    without = model.compress(sample_text[:1500]).features
    compressor.segment_encoder = encoder
    assert torch.equal(with_encoder, without)
    _open_segment_encoder(model)
    assert not torch.allclose(model.compress(sample_text[:1500]).features, without, atol=1e-4)


def test_segment_encoder_layers_must_be_a_count():
    from lcirc_plugins import LCIRCConfig
    from lcirc_plugins.errors import ConfigError

    with pytest.raises(ConfigError, match="segment_encoder_layers"):
        LCIRCConfig(segment_encoder_layers=-1)
