"""The whole reader: a second reader per layer reads the question's whole segments, the first one the slots."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch
from support import SAMPLE_BOOK, one_torch_thread

from lcirc_plugins import LCIRCConfig, LCIRCModel
from lcirc_plugins.errors import ConfigError, LCIRCError
from lcirc_plugins.model.layer_reader import WholeRows
from lcirc_plugins.model.memory import MemoryRows
from lcirc_plugins.model.provenance import attention_by_token
from lcirc_plugins.training import TrainConfig, Trainer, compress_for_training
from lcirc_plugins.training.distractors import DistractorPool

WHOLE = {"reader": "layer", "lora_rank": 4, "tokens_per_slot": 8, "slot_selection": True, "gate_init": 0.5, "whole_segments": 1}


def _ids(length: int = 9) -> torch.Tensor:
    return torch.randint(5, 1000, (1, length), generator=torch.Generator().manual_seed(1))


def _open_whole_readers(model: LCIRCModel, gate: float = 0.5, seed: int = 7) -> None:
    """Give every whole reader an open gate and non-zero deltas, as training would."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for block in model.adapter.gca.values():
            block.whole.attn_gate.fill_(gate)
            for delta in block.whole.lora.values():
                delta.up.weight.normal_(std=0.05)


def _question_view(model: LCIRCModel, text: str):
    """A stored memory of ``text`` and the view of a question about its segment 2."""
    with one_torch_thread():
        memory = model.compress(text)
    question = "What did " + model.tokenizer.decode(memory.segment_token_ids(2).tolist()[5:25]) + "?"
    return model, memory, model.for_question(memory, question)


@pytest.fixture
def view(make_lcirc, sample_text):
    """A whole-reader model, a stored memory and the question's view of it (segment 2 whole beside every slot)."""
    return _question_view(make_lcirc("llama", **WHOLE, whole_reader=True, whole_beside=True), sample_text[:1500])


def test_by_default_the_whole_reader_reads_a_segment_in_place_of_its_slots(make_lcirc, sample_text):
    model, memory, seen = _question_view(make_lcirc("llama", **WHOLE, whole_reader=True), sample_text[:1500])
    elsewhere = memory.segment_of_rows() != 2
    assert torch.equal(seen.features[~seen.whole_rows], memory.features[elsewhere])
    assert torch.equal(seen.positions[seen.whole_rows], torch.arange(2 * memory.segment_len, 3 * memory.segment_len, dtype=seen.positions.dtype))
    own = [torch.randint(5, 1000, (1, 32))]
    with torch.no_grad():
        rows = compress_for_training(model, own, set(), whole=True)
    assert rows.features.shape[1] == 32 and bool(rows.whole.all()), "an example's own segments whole, read by the whole reader"


def test_a_question_s_view_keeps_every_slot_and_adds_its_segment_whole(view):
    _, memory, seen = view
    flagged = seen.whole_rows
    assert torch.equal(seen.features[~flagged], memory.features) and torch.equal(seen.positions[~flagged], memory.positions)
    assert torch.equal(seen.positions[flagged], torch.arange(2 * memory.segment_len, 3 * memory.segment_len, dtype=seen.positions.dtype))
    assert bool((seen.positions[1:] >= seen.positions[:-1]).all()), "rows stay in text order"
    with pytest.raises(LCIRCError, match="view"):
        seen.save("never.safetensors")


def test_a_closed_whole_reader_reads_exactly_as_the_slots_alone(view):
    model, memory, seen = view
    with one_torch_thread(), torch.no_grad():
        assert torch.equal(model(_ids(), memory=seen).logits, model(_ids(), memory=memory).logits)
        _open_whole_readers(model)  # (rows, not memories: the memories' adapter fingerprint is now another)
        assert (model(_ids(), memory=MemoryRows.of(seen)).logits - model(_ids(), memory=MemoryRows.of(memory)).logits).abs().max() > 1e-4


def test_each_reader_reads_only_its_own_rows(view, make_lcirc):
    """Slot readers shut, whole readers open: the same logits as a plain reader with the whole readers' weights
    reading the whole rows alone (so no slot reaches the whole reader, and no whole row the slot reader)."""
    model, memory, seen = view
    _open_whole_readers(model)
    plain = make_lcirc("llama", **WHOLE)
    with torch.no_grad():
        for index, block in model.adapter.gca.items():
            block.attn_gate.zero_()
            plain.adapter.gca[index].load_state_dict(block.whole.state_dict())
    flagged = seen.whole_rows
    alone = MemoryRows(seen.features[flagged], seen.positions[flagged].float() - memory.num_tokens, memory.num_tokens)
    with one_torch_thread(), torch.no_grad():
        torch.testing.assert_close(model(_ids(), memory=MemoryRows.of(seen)).logits, plain(_ids(), memory=alone).logits, rtol=1e-5, atol=1e-5)


def test_provenance_puts_the_whole_reader_s_attention_on_the_whole_rows(view):
    model, _, seen = view
    _open_whole_readers(model)
    with torch.no_grad():
        for block in model.adapter.gca.values():
            block.attn_gate.zero_()
    with one_torch_thread():
        read = attention_by_token(model, _ids(), MemoryRows.of(seen))
    assert read.shape == (9, seen.num_vectors)
    assert read[:, seen.whole_rows].sum() > 0 and read[:, ~seen.whole_rows].abs().max() == 0


def test_a_batch_where_only_some_prompts_read_whole_segments(view):
    """Padding: a prompt without whole rows reads its slots exactly as it would alone."""
    model, memory, seen = view
    _open_whole_readers(model)
    ids = _ids()
    with one_torch_thread(), torch.no_grad():
        together = model(ids.expand(2, -1), memory=[MemoryRows.of(seen), MemoryRows.of(memory)]).logits
        alone = model(ids, memory=MemoryRows.of(memory)).logits
    torch.testing.assert_close(together[1:], alone, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(together).all()


def test_an_adapter_without_a_whole_reader_refuses_whole_rows(view, make_lcirc):
    _, _, seen = view
    plain = make_lcirc("llama", **WHOLE)
    rows = MemoryRows.of(seen)
    with pytest.raises(ValueError, match="whole reader"), torch.no_grad():
        plain(_ids(), memory=rows)


def test_a_saved_adapter_grows_a_closed_whole_reader(make_lcirc, sample_text, tmp_path):
    model = make_lcirc("llama", **WHOLE)
    model.save_pretrained(tmp_path / "plain")
    grown = LCIRCModel.from_pretrained(tmp_path / "plain", backbone=model.backbone, tokenizer=model.tokenizer, config_overrides={"whole_reader": True})
    try:
        assert all(float(block.whole.attn_gate) == 0.0 for block in grown.adapter.gca.values())
        with one_torch_thread(), torch.no_grad():
            text = sample_text[:1200]
            assert torch.equal(grown(_ids(), memory=grown.compress(text)).logits, model(_ids(), memory=model.compress(text)).logits)
        grown.save_pretrained(tmp_path / "grown")
        assert json.loads((tmp_path / "grown" / "adapter_config.json").read_text())["whole_reader"] is True
    finally:
        grown.injector.detach()


def test_training_only_the_whole_readers_leaves_everything_else_as_it_was(make_lcirc, tmp_path):
    model = make_lcirc("llama", **WHOLE, whole_reader=True, whole_beside=True)
    own = [torch.randint(5, 1000, (1, 32))]
    with torch.no_grad():
        rows = compress_for_training(model, own, set(), whole=True)
        drawn = DistractorPool(model, str(SAMPLE_BOOK), size=4, seed=0).draw(random.Random(0), 2, whole=1)
    assert rows.features.shape[1] == 4 + 32 and int(rows.whole.sum()) == 32, "own slots and every own token beside them"
    assert [d.features.shape[1] for d in drawn] == [36, 4] and int(drawn[0].whole.sum()) == 32

    before = {name: p.detach().clone() for name, p in model.adapter.named_parameters()}
    config = TrainConfig(
        stage="qa", data=f"synthetic:passkey:{SAMPLE_BOOK}", distractors=str(SAMPLE_BOOK), distractor_pool=6, distractor_segments=2,
        output_dir=str(tmp_path), steps=3, lr=1e-2, gate_lr_scale=10, bptt="full", min_train_segment_len=32, max_train_segment_len=32,
        max_segments=2, eval_every=0, save_every=3, whole_share=1.0, train_only="whole.", seed=3,
    )
    Trainer(config, model=model).train()
    changed = {name for name, p in model.adapter.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed and all(".whole." in name for name in changed), sorted(changed)[:3]
    assert any(name.endswith("whole.attn_gate") for name in changed), "the whole readers' gates open"
    with pytest.raises(LCIRCError, match="train_only"):
        Trainer(TrainConfig(**{**config.to_dict(), "train_only": "nothing-like-this"}), model=model)


@pytest.fixture
def one_softmax(make_lcirc, sample_text):
    """A joint-softmax model whose whole readers are copies of its (trained-looking) slot readers, a plain reader with
    the same weights, and a question's rows (QD bias on every row) with and without the whole flags."""
    model, _, seen = _question_view(make_lcirc("llama", **WHOLE, whole_reader=True, whole_softmax="joint"), sample_text[:1500])
    plain = make_lcirc("llama", **WHOLE)
    torch.manual_seed(7)
    with torch.no_grad():
        for index, block in model.adapter.gca.items():
            for delta in block.lora.values():
                delta.up.weight.normal_(std=0.05)
            own = {name: tensor for name, tensor in block.state_dict().items() if not name.startswith("whole.")}
            block.whole.load_state_dict(own)
            plain.adapter.gca[index].load_state_dict(own)
    rows = MemoryRows.of(seen, bias=torch.randn(seen.num_vectors, generator=torch.Generator().manual_seed(3)))
    assert bool(rows.whole.any()) and not bool(rows.whole.all())
    return model, plain, rows, dataclasses.replace(rows, whole=None)


def test_one_softmax_over_copied_readers_reads_as_one_shared_reader(one_softmax):
    """whole_softmax='joint' with the whole readers a copy of the slot readers is R5's single reader exactly (the QD
    bias included); each kind of row in its own softmax is not."""
    model, plain, rows, unflagged = one_softmax
    with one_torch_thread(), torch.no_grad():
        shared = plain(_ids(), memory=unflagged).logits
        torch.testing.assert_close(model(_ids(), memory=rows).logits, shared, rtol=1e-5, atol=1e-5)
        for block in model.adapter.gca.values():
            block.joint_softmax = False
        assert (model(_ids(), memory=rows).logits - shared).abs().max() > 1e-4


def test_provenance_of_one_softmax_is_the_shared_reader_s(one_softmax):
    model, plain, rows, unflagged = one_softmax
    with one_torch_thread():
        torch.testing.assert_close(attention_by_token(model, _ids(), rows), attention_by_token(plain, _ids(), unflagged), rtol=1e-5, atol=1e-6)


def test_a_batch_with_one_softmax_where_only_some_prompts_read_whole_segments(one_softmax):
    model, _, rows, unflagged = one_softmax
    ids = _ids()
    slots_only = dataclasses.replace(unflagged, features=unflagged.features[~rows.whole], positions=unflagged.positions[~rows.whole], bias=unflagged.bias[~rows.whole])
    with one_torch_thread(), torch.no_grad():
        together = model(ids.expand(2, -1), memory=[rows, slots_only]).logits
        alone = model(ids, memory=slots_only).logits
    torch.testing.assert_close(together[1:], alone, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(together).all()


def test_the_whole_reader_needs_whole_segments():
    with pytest.raises(ConfigError, match="whole_reader"):
        LCIRCConfig(reader="layer", whole_reader=True)
    with pytest.raises(ConfigError, match="whole_beside"):
        LCIRCConfig(reader="layer", whole_segments=1, whole_beside=True)
    with pytest.raises(ConfigError, match="whole_softmax"):
        LCIRCConfig(reader="layer", whole_segments=1, whole_softmax="joint")
    with pytest.raises(ConfigError, match="'separate' or 'joint'"):
        LCIRCConfig(reader="layer", whole_segments=1, whole_reader=True, whole_softmax="shared")


def test_one_softmax_scores_each_kind_of_row_with_its_own_reader(one_softmax):
    """The shared query projection of both readers gives each reader's own query (deltas, rotation and all)."""
    model, _, _, _ = one_softmax
    _open_whole_readers(model, seed=11)  # whole readers unlike the slot readers they were copied from
    index = min(model.adapter.gca, key=int)
    block, generator = model.adapter.gca[index], torch.Generator().manual_seed(5)
    hidden = torch.randn(1, 5, block.parts.dim, generator=generator)
    rotary = model.injector.rotary(int(index), torch.arange(5.0)[None], hidden)
    slots = block.project_memory(torch.randn(1, 7, block.parts.dim, generator=generator), None)
    whole = WholeRows(block.whole.project_memory(torch.randn(1, 4, block.parts.dim, generator=generator), None), None, torch.randn(1, 4, generator=generator))
    bias = torch.randn(1, 7, generator=generator)
    with torch.no_grad():
        slot_scores, _ = block._scores(hidden, slots, None, rotary, bias)
        whole_scores, _ = block.whole._scores(hidden, whole.kv, None, rotary, whole.bias)
        reference = torch.cat([slot_scores, whole_scores], dim=-1).softmax(dim=-1).split([7, 4], dim=-1)
        (slot_probs, _), (whole_probs, _) = block.joint_probs(hidden, slots, None, rotary, bias, whole)
    torch.testing.assert_close(slot_probs, reference[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(whole_probs, reference[1], rtol=1e-5, atol=1e-6)


def test_a_question_over_two_books_reads_its_segments_whole_in_all_not_in_each(make_lcirc, sample_text):
    model = make_lcirc("llama", **WHOLE, whole_reader=True)
    with one_torch_thread():
        first, second = model.compress(sample_text[:1500]), model.compress(sample_text[3000:4500])
        question = "What did " + model.tokenizer.decode(second.segment_token_ids(2).tolist()[5:25]) + "?"
        views = model.for_question_all([first, second], question)
    assert views[0] is first, "the other book reads no segment whole"
    length = second.segment_len
    assert torch.equal(views[1].positions[views[1].whole_rows], torch.arange(2 * length, 3 * length, dtype=views[1].positions.dtype))
    assert views[1] is not second and model.for_question_all([second], question)[0].whole_rows.sum() == length
