"""Whole segments: the question's most relevant segments read token by token (the layer reader's QD recompression)."""

from __future__ import annotations

import pytest
import torch
from support import one_torch_thread

from lcirc_plugins import LCIRCConfig
from lcirc_plugins.errors import ConfigError
from lcirc_plugins.model.whole_segments import relevant_segments, with_whole_segments

SELECTING = {"reader": "layer", "lora_rank": 4, "tokens_per_slot": 8, "slot_selection": True, "gate_init": 0.5}
SENTENCES = (
    "The harbour master kept a brass compass in his coat.",
    "Rain fell on the quiet village all night long.",
    "The ferryman's goat was named Horatio by the children.",
)


def _segments_of(tokenizer, sentences: tuple[str, ...], length: int) -> torch.Tensor:
    """One ``length``-token segment per sentence (the sentence repeated, then cut)."""
    pieces = [tokenizer((s + " ") * 8, add_special_tokens=False, return_tensors="pt")["input_ids"][0, :length] for s in sentences]
    return torch.cat(pieces)


def test_relevant_segments_are_the_question_s_passages_in_text_order(smollm2_tokenizer):
    ids = _segments_of(smollm2_tokenizer, SENTENCES, 32)
    assert relevant_segments(smollm2_tokenizer, ids, 32, "What was the name of the ferryman's goat?", 1) == [2]
    assert relevant_segments(smollm2_tokenizer, ids, 32, "Did the ferryman see the harbour master?", 3) == [0, 2]
    assert relevant_segments(smollm2_tokenizer, ids, 32, "Who painted the lighthouse?", 2) == [], "no shared word, no evidence"
    assert relevant_segments(smollm2_tokenizer, ids, 32, "goat", 0) == []


def test_whole_segments_are_every_token_s_states_at_their_own_positions(make_lcirc, sample_text):
    model = make_lcirc("llama", **SELECTING)
    with one_torch_thread():
        memory = model.compress(sample_text[:1200])
        everything = list(range(memory.num_segments))
        features, positions, whole, _ = with_whole_segments(model, memory.token_ids, memory.features, memory.positions, everything)
        length = model.config.segment_len
        reference = torch.cat([model.segment_states(piece[None].long())[0] for piece in memory.token_ids.split(length)])
    assert torch.equal(positions, torch.arange(memory.num_tokens, dtype=positions.dtype)) and bool(whole.all())
    torch.testing.assert_close(features, reference.float(), rtol=1e-5, atol=1e-5)

    with one_torch_thread():
        features, positions, whole, source = with_whole_segments(model, memory.token_ids, memory.features, memory.positions, [1])
    in_one = memory.segment_of_rows() == 1
    assert len(features) == memory.num_vectors - int(in_one.sum()) + length
    assert torch.equal(whole, (positions // length) == 1), "every row of segment 1 is its whole text"
    assert bool((positions[1:] > positions[:-1]).all()), "rows stay in text order"
    assert torch.equal(features[: int(in_one.nonzero()[0])], memory.features[: int(in_one.nonzero()[0])]), "segment 0 keeps its slots"
    assert torch.equal(features[~whole], memory.features[source[~whole]]), "every other row names the stored row it is"


def test_a_question_reads_its_segments_whole_and_the_stored_memory_is_unchanged(make_lcirc, sample_text):
    model = make_lcirc("llama", **SELECTING, whole_segments=1)
    with one_torch_thread():
        memory = model.compress(sample_text[:1500])
    stored = memory.features.clone()
    question = "What did " + model.tokenizer.decode(memory.segment_token_ids(2).tolist()[5:25]) + "?"
    chosen = relevant_segments(model.tokenizer, memory.token_ids, memory.segment_len, question, 1)
    assert len(chosen) == 1
    with one_torch_thread():
        prepared = model.prepare_answer(question, memory, max_new_tokens=4)
        plain = model.prepare_answer(question, memory, max_new_tokens=4, query_dependent=False)
        answer = model.generate_text(prepared, max_new_tokens=4)[0]
        provenance = model.provenance(prepared, answer or "x")
    view = prepared.sources[0]
    assert torch.equal(memory.features, stored) and plain.sources[0] is memory
    assert int((view.segment_of_rows() == chosen[0]).sum()) == len(memory.segment_token_ids(chosen[0]))
    assert prepared.rows.features.shape[0] == view.num_vectors > memory.num_vectors == plain.rows.features.shape[0]
    assert provenance.method == "attention" and all(0 <= p.segment < memory.num_segments for p in provenance.passages)


def test_without_whole_segments_a_question_reads_the_stored_slots(make_lcirc, sample_text):
    model = make_lcirc("llama", **SELECTING)
    with one_torch_thread():
        memory = model.compress(sample_text[:800])
    assert model.for_question(memory, "What did the captain say?") is memory


def test_whole_segments_need_independently_compressed_layer_memories():
    with pytest.raises(ConfigError, match="whole_segments"):
        LCIRCConfig(whole_segments=2)  # the paper reader
    with pytest.raises(ConfigError, match="whole_segments"):
        LCIRCConfig(reader="layer", slot_correction=True, whole_segments=1)
    with pytest.raises(ConfigError, match="whole_segments"):
        LCIRCConfig(reader="layer", whole_segments=-1)
