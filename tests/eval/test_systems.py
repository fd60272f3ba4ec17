"""Every system end to end on a tiny random backbone (window 256) with the real SmolLM2 tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
from support import COMMON, one_torch_thread
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from lcirc_plugins.data.synthetic import passkey
from lcirc_plugins.eval.systems import (
    BM25RAG,
    ContextTooLongError,
    ExtendedFA,
    FullContext,
    LCIRCSystem,
    System,
    TruncatedBackbone,
    build_systems,
)
from lcirc_plugins.model.layer_memory import slots_in


@pytest.fixture
def ids(sample_text, smollm2_tokenizer):
    return smollm2_tokenizer(sample_text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("cls", [TruncatedBackbone, FullContext, ExtendedFA, LCIRCSystem, BM25RAG])
def test_each_system_runs_end_to_end(make_lcirc, ids, sample_text, cls):
    model = make_lcirc("llama")
    system = cls(model)
    assert isinstance(system, System)
    with one_torch_thread():
        nll = system.nll(ids[:400], ids[400:432])
        reply = system.answer(sample_text[:3000], "Who is the story about?", max_new_tokens=4)
    assert math.isfinite(nll) and nll > 0
    assert isinstance(reply, str)
    assert system.flops(432) > 0


def test_truncated_scores_only_the_window(make_lcirc, ids):
    system = TruncatedBackbone(make_lcirc("llama"))
    with one_torch_thread():
        # tokens beyond the window (256 - 32 context tokens) cannot change the score
        a = system.nll(ids[:400], ids[400:432])
        b = system.nll(ids[100:400], ids[400:432])
        full = FullContext(system.model).nll(ids[100:400], ids[400:432])
    assert a == pytest.approx(b, abs=1e-6)
    assert full != pytest.approx(a, abs=1e-6)  # full attention does read them


def test_full_context_refuses_beyond_max_positions(make_lcirc):
    system = FullContext(make_lcirc("llama"))
    n = system.max_positions
    with pytest.raises(ContextTooLongError, match="positions"):
        system.nll([5] * n, [6, 7])


def test_extended_fa_equals_full_context_within_the_positions(make_lcirc, ids, sample_text):
    model = make_lcirc("llama")
    full, extended = FullContext(model), ExtendedFA(model)
    with one_torch_thread():
        assert extended.nll(ids[:400], ids[400:432]) == full.nll(ids[:400], ids[400:432])
        question = "Who is the story about?"
        assert extended.answer(sample_text[:1500], question, 6) == full.answer(sample_text[:1500], question, 6)
    assert extended.flops(432) == full.flops(432)


@pytest.fixture
def short_positions(make_lcirc):
    """A tiny Llama that claims only 300 positions (its rotary embedding was built at init, so it still runs)."""
    model = make_lcirc("llama")
    model.backbone.config.max_position_embeddings = 300
    yield model
    model.backbone.config.max_position_embeddings = 2048


def test_extended_fa_runs_beyond_the_positions_by_interpolating_them(short_positions, ids):
    model = short_positions
    rotary = model.backbone.model.rotary_emb
    before = rotary.inv_freq.clone()
    with pytest.raises(ContextTooLongError, match="300 positions"):
        FullContext(model).nll(ids[:400], ids[400:432])
    extended = ExtendedFA(model)
    with one_torch_thread():
        scaled = extended.nll(ids[:400], ids[400:432])
        model.backbone.config.max_position_embeddings = 2048  # the same tokens at their raw positions
        raw = FullContext(model).nll(ids[:400], ids[400:432])
        model.backbone.config.max_position_embeddings = 300
    assert math.isfinite(scaled) and scaled != pytest.approx(raw, abs=1e-6)
    assert torch.equal(rotary.inv_freq, before)  # restored after the call


def test_extended_fa_frequencies_are_transformers_linear_rope(short_positions):
    extended = ExtendedFA(short_positions)
    theta = short_positions.backbone.config.rope_parameters["rope_theta"]
    with extended.rope_scaled(450) as factor:
        scaled = short_positions.backbone.model.rotary_emb.inv_freq.clone()
    assert factor == pytest.approx(1.5)
    linear = LlamaConfig(
        **{**COMMON, "vocab_size": 32}, rope_parameters={"rope_type": "linear", "factor": 1.5, "rope_theta": theta}
    )
    assert torch.allclose(scaled, LlamaRotaryEmbedding(linear).inv_freq, rtol=1e-6, atol=0)
    with extended.rope_scaled(300) as factor:
        assert factor == 1.0


def test_extended_fa_refuses_learned_positions_beyond_their_length(make_lcirc):
    model = make_lcirc("gpt2")
    model.backbone.config.n_positions = 300
    try:
        with pytest.raises(ContextTooLongError, match="no rotary embedding"):
            ExtendedFA(model).nll([5] * 400, [6, 7])
    finally:
        model.backbone.config.n_positions = 2048


def test_lcirc_reads_memory_and_equals_truncated_with_closed_gates(make_lcirc, ids):
    # The fixture's models share one backbone and GCA hooks read a process-wide ContextVar, so each model's
    # hooks are removed before the next model is built.
    with one_torch_thread():
        closed = make_lcirc("llama")  # gates at 0: GCA is an identity
        base = TruncatedBackbone(closed).nll(ids[:600], ids[600:632])
        same = LCIRCSystem(closed).nll(ids[:600], ids[600:632])
        closed.injector.detach()
        opened = make_lcirc("llama", gate_init=0.5)
        lcirc = LCIRCSystem(opened).nll(ids[:600], ids[600:632])
        plain = TruncatedBackbone(opened).nll(ids[:600], ids[600:632])
        other_head = LCIRCSystem(opened).nll(ids[50:600], ids[600:632])
        assert LCIRCSystem(opened).name == "lcirc"
        opened.injector.detach()
        qd = make_lcirc("llama", gate_init=0.5, query_dependent=True)
        qd_nll = LCIRCSystem(qd).nll(ids[:600], ids[600:632])
        assert LCIRCSystem(qd).name == "qd-lcirc"
    assert same == pytest.approx(base, abs=1e-5)
    assert plain == pytest.approx(base, abs=1e-5)  # without memory the hooks do nothing
    assert lcirc != pytest.approx(base, abs=1e-4)  # the memory of the 376 head tokens is read
    assert other_head != pytest.approx(lcirc, abs=1e-6)  # and it depends on what was compressed
    assert math.isfinite(qd_nll) and qd_nll != pytest.approx(lcirc, abs=1e-6)


def test_lcirc_and_qd_lcirc_share_one_layer_reader_build_and_read_it_as_compressed_with_the_question(
    make_lcirc, ids, monkeypatch
):
    model = make_lcirc("llama", reader="layer", lora_rank=4, tokens_per_slot=8, query_dependent=True, gate_init=0.5)
    with torch.no_grad():  # open the QD scorer, which starts at zero
        model.adapter.compressor.relevance.weight.normal_()
        model.adapter.compressor.query_mixer.attn_gate.fill_(1.0)
    head, query = ids[:600], ids[600:620]
    with one_torch_thread():
        reference = model.compress_ids(torch.tensor(head), torch.tensor(query))
        question_free = model.compress_ids(torch.tensor(head))
        builds = []
        real = model.compress_ids
        monkeypatch.setattr(model, "compress_ids", lambda *a, **k: builds.append(1) or real(*a, **k))
        plain = LCIRCSystem(model, use_query=False)._compress(head, query)
        conditioned = LCIRCSystem(model, keep_window=False)._compress(head, query)
    assert len(builds) == 1, "the second system reuses the first one's memory"
    assert torch.equal(plain.features, reference.features) and torch.equal(conditioned.features, reference.features)
    torch.testing.assert_close(plain.bias, question_free.bias)
    torch.testing.assert_close(conditioned.bias, reference.bias)
    assert not torch.allclose(plain.bias, conditioned.bias), "only QD-LCIRC reads the question"
    with one_torch_thread():
        LCIRCSystem(model)._compress(ids[1:600], query)
    assert len(builds) == 2, "another context is compressed anew"


def _captured_prompt(system, context, question, monkeypatch):
    seen = {}

    def fake_generate(prompt, max_new_tokens, memory=None, compressed=0):
        seen["prompt"] = system.tokenizer.decode(prompt)
        return ""

    monkeypatch.setattr(system, "_generate", fake_generate)
    system.answer(context, question, max_new_tokens=8)
    return seen["prompt"]


def test_rag_retrieves_the_chunk_holding_the_needle(make_lcirc, sample_text, smollm2_tokenizer, monkeypatch):
    model = make_lcirc("llama")
    example = passkey(3, num_tokens=1500, tokenizer=smollm2_tokenizer, depth=0.1, haystack=sample_text)
    rag = BM25RAG(model, chunk_tokens=64, top_k=2)
    retrieved = rag.retrieve(example.context, example.question)
    assert "pass key" in retrieved[0]
    assert example.answer in " ".join(retrieved)
    # the retrieved chunk reaches the prompt; the truncated window (the last ~200 tokens) misses the needle at 10 %
    assert example.answer in _captured_prompt(rag, example.context, example.question, monkeypatch)
    truncated = TruncatedBackbone(model)
    assert example.answer not in _captured_prompt(truncated, example.context, example.question, monkeypatch)


def test_build_systems_by_name(make_lcirc):
    model, qd = make_lcirc("llama"), make_lcirc("llama", query_dependent=True)
    names = [s.name for s in build_systems(model, ["truncated", "full", "extended-fa", "bm25-rag", "lcirc", "qd-lcirc"], qd)]
    assert names == ["truncated", "full", "extended-fa", "bm25-rag", "lcirc", "qd-lcirc"]
    with pytest.raises(Exception, match="query-dependent"):
        build_systems(model, ["qd-lcirc"])
    with pytest.raises(Exception, match="unknown system"):
        build_systems(model, ["gpt5"])


def test_extended_fa_skips_contexts_beyond_the_runs_budget(make_lcirc, ids):
    capped = build_systems(make_lcirc("llama"), ["extended-fa"], full_max_tokens=100)[0]
    with pytest.raises(ContextTooLongError, match="full-attention budget of 100"):
        capped.nll(ids[:200], ids[200:210])
    with one_torch_thread():
        assert math.isfinite(capped.nll(ids[:80], ids[80:90]))


def test_memory_only_lcirc_answers_as_the_product_does(make_lcirc, sample_text):
    """keep_window=False: the whole context in memory, only the question in the decoder (LCIRCModel.answer)."""
    model = make_lcirc("llama", reader="layer", lora_rank=4, tokens_per_slot=8, slot_selection=True, gate_init=0.5)
    context, question = sample_text[:1500], "Who keeps the inn?"
    with one_torch_thread():
        system = LCIRCSystem(model, keep_window=False)
        answer = system.answer(context, question, 8)
        product = model.answer(question, model.compress(context), max_new_tokens=8)
        windowed = LCIRCSystem(model).answer(context, question, 8)
        ids = model.tokenizer(context, add_special_tokens=False)["input_ids"]
        memory_nll, windowed_nll = system.nll(ids[:300], ids[300:316]), LCIRCSystem(model).nll(ids[:300], ids[300:316])
    assert system.name == "lcirc-memory" and answer == product
    assert math.isfinite(memory_nll) and memory_nll != pytest.approx(windowed_nll), "perplexity with the context in memory only"
    assert windowed != answer, "the default system keeps the context's last tokens in the window"


def test_qd_lcirc_reads_the_question_s_segment_whole_and_lcirc_its_slots(make_lcirc, ids):
    model = make_lcirc("llama", reader="layer", lora_rank=4, tokens_per_slot=8, slot_selection=True, query_dependent=True, whole_segments=1)
    head = ids[:600]
    length = model.config.segment_len
    question = model.tokenizer.encode("Where is " + model.tokenizer.decode(head[3 * length + 4 : 3 * length + 20]) + "?")
    with one_torch_thread():
        plain = LCIRCSystem(model, use_query=False)._compress(head, question)
        conditioned = LCIRCSystem(model, keep_window=False)._compress(head, question)
        whole = model.segment_states(torch.tensor(head[3 * length : 4 * length])[None])[0].float()
    at = (conditioned.positions + conditioned.span >= 3 * length) & (conditioned.positions + conditioned.span < 4 * length)
    assert len(plain.features) == slots_in(600, length, 8) and int(at.sum()) == length
    torch.testing.assert_close(conditioned.features[at], whole, rtol=1e-5, atol=1e-5)
    assert conditioned.bias is not None and len(conditioned.bias) == len(conditioned.features)
