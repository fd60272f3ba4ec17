"""Keys/values projected once per memory: the layer readers read a memory's rows as if projected per answer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from support import one_torch_thread

from lcirc_plugins import CompressedMemory
from lcirc_plugins.model.memory import MemoryRows

WHOLE = {"reader": "layer", "lora_rank": 4, "tokens_per_slot": 8, "slot_selection": True, "gate_init": 0.5, "whole_segments": 1}
QUESTION_WORDS = slice(5, 25)


def _open_deltas(model, seed: int = 7) -> None:
    """Non-zero deltas on every reader (the slots' and the whole segments'), as training would leave them."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for block in model.adapter.gca.values():
            for reader in (block, block.whole):
                if reader is None:
                    continue
                reader.attn_gate.fill_(0.5)
                for delta in reader.lora.values():
                    delta.up.weight.normal_(std=0.05)


def _question(model, memory: CompressedMemory, segment: int = 2) -> str:
    return "What did " + model.tokenizer.decode(memory.segment_token_ids(segment).tolist()[QUESTION_WORDS]) + "?"


def _logits(model, ids: torch.Tensor, rows: MemoryRows | list[MemoryRows]) -> torch.Tensor:
    with one_torch_thread(), torch.no_grad():
        return model(ids, memory=rows).logits


def _unprojected(rows: MemoryRows) -> MemoryRows:
    return dataclasses.replace(rows, keys_values=None)


@pytest.fixture
def question_view(make_lcirc, sample_text):
    """A whole-reader model (one softmax for both readers) with trained-looking deltas, a stored memory and a question."""
    model = make_lcirc("llama", **WHOLE, whole_reader=True, whole_softmax="joint")
    _open_deltas(model)
    with one_torch_thread():
        memory = model.compress(sample_text[:1500])
    return model, memory, _question(model, memory)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3", "gpt2"])
def test_answers_read_projected_rows_as_rows_projected_per_answer(make_lcirc, sample_text, family):
    model = make_lcirc(family, reader="layer", lora_rank=4, tokens_per_slot=8, slot_selection=True, gate_init=0.5)
    _open_deltas(model)
    with one_torch_thread():
        memory = model.compress(sample_text[:900])
        prepared = model.prepare_answer("Who kept the compass?", memory, max_new_tokens=8)
    assert prepared.rows.keys_values is not None and prepared.rows.keys_values.shape[:2] == memory.features.shape[:2]
    projected, per_answer = _logits(model, prepared.input_ids, prepared.rows), _logits(model, prepared.input_ids, _unprojected(prepared.rows))
    torch.testing.assert_close(projected, per_answer, rtol=1e-5, atol=1e-5)
    assert (projected - _logits(model, prepared.input_ids, None)).abs().max() > 1e-3, "the memory is read at all"


def test_a_question_s_view_reuses_the_stored_rows_and_projects_only_its_whole_segments(question_view):
    model, memory, question = question_view
    stored = memory.projected[1]
    assert stored.shape[:2] == memory.features.shape[:2], "a compressed memory comes with its keys/values"
    with one_torch_thread():
        prepared = model.prepare_answer(question, memory, max_new_tokens=8)
    rows = prepared.rows
    assert bool(rows.whole.any()), "the question reads a segment whole"
    assert rows.keys_values.shape[0] == rows.features.shape[0] and torch.equal(rows.keys_values[~rows.whole], stored[memory.segment_of_rows() != 2])
    torch.testing.assert_close(_logits(model, prepared.input_ids, rows), _logits(model, prepared.input_ids, _unprojected(rows)), rtol=1e-5, atol=1e-5)
    with one_torch_thread():
        model.prepare_answer(_question(model, memory, segment=1), memory, max_new_tokens=8)
    assert memory.projected[1] is stored, "a second question projects no stored row again"


def test_changed_adapter_weights_project_the_memory_again(question_view):
    model, memory, question = question_view
    with one_torch_thread():
        model.prepare_answer(question, memory, max_new_tokens=8)
        before = memory.projected[1]
        _open_deltas(model, seed=11)
        memory.adapter_fingerprint = model.adapter_fingerprint  # the same memory object, projected with the old weights
        prepared = model.prepare_answer(question, memory, max_new_tokens=8)
    assert not torch.equal(prepared.rows.keys_values[~prepared.rows.whole], before[memory.segment_of_rows() != 2])
    torch.testing.assert_close(
        _logits(model, prepared.input_ids, prepared.rows), _logits(model, prepared.input_ids, _unprojected(prepared.rows)), rtol=1e-5, atol=1e-5
    )


def test_a_batch_of_projected_rows_reads_each_prompt_as_alone(question_view):
    model, memory, question = question_view
    with one_torch_thread():
        with_whole = model.prepare_answer(question, memory, max_new_tokens=8).rows
        slots_only = model.read_memories([memory])
    ids = torch.randint(5, 1000, (1, 9), generator=torch.Generator().manual_seed(1))
    together = _logits(model, ids.expand(2, -1), [with_whole, slots_only])
    torch.testing.assert_close(together[0:1], _logits(model, ids, _unprojected(with_whole)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[1:], _logits(model, ids, _unprojected(slots_only)), rtol=1e-5, atol=1e-5)


def test_training_reaches_the_key_deltas_even_with_projected_rows(question_view):
    """Rows projected without gradients are projected again while gradients are recorded."""
    model, memory, question = question_view
    with one_torch_thread():
        rows = model.prepare_answer(question, memory, max_new_tokens=8).rows
        ids = torch.randint(5, 1000, (1, 9), generator=torch.Generator().manual_seed(1))
        model(ids, memory=rows, labels=ids).loss.backward()
    block = model.adapter.gca[min(model.adapter.gca, key=int)]
    assert block.lora["k"].up.weight.grad is not None and block.lora["k"].up.weight.grad.abs().max() > 0
    assert block.whole.lora["k"].up.weight.grad.abs().max() > 0


def test_projected_rows_are_never_saved_and_a_loaded_memory_projects_its_own(question_view, tmp_path):
    model, memory, _ = question_view
    with one_torch_thread():
        model.read_memories([memory])
        loaded = CompressedMemory.load(memory.save(tmp_path / "book.lcirc-memory"))
        assert loaded.projected is None
        torch.testing.assert_close(model.keys_values(loaded), memory.projected[1])

