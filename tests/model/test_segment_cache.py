"""Reusing compressed segments (LCIRCModel.reusing_segments): exact, and only the changed segments are read."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from support import one_torch_thread

from lcirc_plugins.errors import LCIRCError
from lcirc_plugins.model.segment_cache import SegmentCache

LAYERS = {"reader": "layer", "lora_rank": 4, "tokens_per_slot": 8, "slot_selection": True, "gca_layers": [0, 1, 2, 3], "salience_layer": 1}


@contextlib.contextmanager
def counting_forwards(model) -> Iterator[list[int]]:
    """How many frozen forwards (segment reads) run inside the block."""
    calls = [0]
    handle = model.backbone.base_model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.fixture
def model(make_lcirc):
    return make_lcirc("llama", **LAYERS)


def _same_memory(a, b) -> None:
    assert torch.equal(a.features, b.features) and torch.equal(a.positions, b.positions) and torch.equal(a.token_ids, b.token_ids)


def test_a_text_compressed_again_reads_no_segment_and_gives_the_same_memory(model, sample_text):
    text = sample_text[:2500]
    with one_torch_thread(), torch.no_grad():
        fresh = model.compress(text)
        segments = fresh.num_segments
        with model.reusing_segments() as cache, counting_forwards(model) as reads:
            first = model.compress(text)
            assert reads[0] == segments and (cache.hits, cache.misses) == (0, segments)
            second = model.compress(text)
            assert reads[0] == segments and cache.hits == segments, "the second build read nothing"
    assert segments > 3
    _same_memory(first, fresh)
    _same_memory(second, fresh)


def test_an_edited_text_reads_only_its_changed_segments(model, sample_text):
    text = sample_text[:2500]
    edited = text[:-300] + " The pass key is 48213. Remember it."
    with one_torch_thread(), torch.no_grad():
        fresh = model.compress(edited)
        before, after = model.compress(text), fresh
        changed = sum(
            1 for i in range(after.num_segments)
            if i >= before.num_segments or not torch.equal(segment_ids(before, i), segment_ids(after, i))
        )
        with model.reusing_segments(), counting_forwards(model) as reads:
            model.compress(text)
            reads[0] = 0
            reused = model.compress(edited)
    assert 0 < changed < fresh.num_segments and reads[0] == changed
    _same_memory(reused, fresh)


def segment_ids(memory, i: int) -> torch.Tensor:
    return memory.token_ids[i * memory.segment_len : (i + 1) * memory.segment_len]


def test_nothing_is_reused_outside_the_block_or_while_training(model, sample_text):
    text = sample_text[:1200]
    with one_torch_thread():
        with model.reusing_segments():
            with torch.no_grad():
                model.compress(text)
            ids = model.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, : model.config.segment_len]
            with torch.enable_grad(), counting_forwards(model) as reads:
                out = model.compress_layer_segments([ids])
            assert reads[0] == 1 and out.scores is not None and out.scores.requires_grad, "training reads with gradients"
            with pytest.raises(LCIRCError, match="do not nest"), model.reusing_segments():
                pass
        with torch.no_grad(), counting_forwards(model) as reads:
            memory = model.compress(text)
    assert reads[0] == memory.num_segments and model._segment_cache is None


def test_a_full_cache_drops_the_least_recently_used_segment():
    cache = SegmentCache(max_bytes=2 * (4 * 4 + 8))  # room for two entries of 4 floats and one int64
    entries = {k: (torch.full((1, 4), float(k)), torch.tensor([k])) for k in range(3)}
    cache.put(torch.tensor([0, 1]), *entries[0])
    cache.put(torch.tensor([1, 2]), *entries[1])
    assert cache.get(torch.tensor([0, 1])) is not None  # 0 is now the most recent
    cache.put(torch.tensor([2, 3]), *entries[2])
    assert len(cache) == 2 and cache.get(torch.tensor([1, 2])) is None and cache.get(torch.tensor([0, 1])) is not None
    assert cache.get(torch.tensor([0, 1, 0])) is None, "other ids, other key"
    assert (cache.hits, cache.misses) == (2, 2)
    with pytest.raises(ValueError, match="needs room"):
        SegmentCache(0)
