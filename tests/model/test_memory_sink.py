"""The memory sink: a learned null row in each head's softmax over the memory, so a token can read nothing."""

from __future__ import annotations

import json

import pytest
import torch
from support import one_torch_thread

from lcirc_plugins import LCIRCConfig, LCIRCModel
from lcirc_plugins.errors import ConfigError
from lcirc_plugins.training import TrainConfig, Trainer

LAYER = {"reader": "layer", "lora_rank": 4, "tokens_per_slot": 4, "gate_init": 0.5}


def _ids(length: int = 9) -> torch.Tensor:
    return torch.randint(5, 1000, (1, length), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def _trained_looking(model: LCIRCModel) -> LCIRCModel:
    torch.manual_seed(7)
    with torch.no_grad():
        for block in model.adapter.gca.values():
            for delta in block.lora.values():
                delta.up.weight.normal_(std=0.05)
    return model


def test_the_sink_is_a_null_row_in_each_heads_own_softmax(make_lcirc):
    """Grouped query heads each get their own sink: the read equals textbook attention over the rows and one more
    row per head whose logit is that head's sink and whose value is zero (QD bias and padding included)."""
    model = _trained_looking(make_lcirc("qwen3", **LAYER, memory_sink=0.0))
    index, block = next(iter(model.adapter.blocks().items()))
    with torch.no_grad():
        block.attn_sink.copy_(torch.linspace(-2.0, 3.0, block.parts.num_heads))
    states = model.segment_states(_ids(12))[:, :, 0]
    kv = block.project_memory(states, model.injector.rotary(index, torch.arange(12.0)[None], states))
    mask, bias, hidden = torch.tensor([[True] * 10 + [False] * 2]), torch.randn(1, 12), torch.randn(1, 3, 64)
    query_rotary = model.injector.rotary(index, torch.arange(12.0, 15.0)[None], states)
    with torch.no_grad():
        groups = block.parts.num_heads // block.parts.num_kv_heads
        assert groups > 1, "the sink's layout is checked with grouped query heads"
        k, v = (x.repeat_interleave(groups, dim=1) for x in (kv[0].transpose(-1, -2), kv[1]))  # keys are stored transposed
        q = block._query(hidden, query_rotary)
        logits = q @ k.transpose(-1, -2) * block.parts.scaling + bias[:, None, None] + torch.where(mask, 0.0, -torch.inf)[:, None, None]
        sink = block.attn_sink[None, :, None, None].expand(1, -1, 3, 1)
        expected_weights = torch.cat([logits, sink], dim=-1).softmax(dim=-1)[..., :-1]
        torch.testing.assert_close(block.attention_weights(hidden, kv, mask, query_rotary, bias), expected_weights)
        heads = (expected_weights @ v).transpose(1, 2).reshape(1, 3, -1)
        expected = block.parts.output(heads) + block._delta("o", heads)
        torch.testing.assert_close(block.read(hidden, kv, mask, query_rotary, bias), expected, rtol=1e-5, atol=1e-5)
    assert (expected_weights.sum(-1) < 1).all(), "the sink takes a share of every head's attention"


def test_a_sink_far_below_the_rows_reads_as_the_reader_without_one(make_lcirc, sample_text):
    with_sink = _trained_looking(make_lcirc("llama", **LAYER, memory_sink=-1e4))
    without = _trained_looking(make_lcirc("llama", **LAYER))
    text = sample_text[:600]
    with torch.no_grad():
        expected = without(_ids(), memory=without.compress(text)).logits
        torch.testing.assert_close(with_sink(_ids(), memory=with_sink.compress(text)).logits, expected)
        assert (expected - without(_ids()).logits).abs().max() > 1e-3, "the reader without a sink reads the memory"


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_a_sink_far_above_the_rows_leaves_the_backbones_logits(make_lcirc, tiny_backbones, sample_text, family):
    """Open gates, trained-looking deltas, and a sink every row loses to: the decoder reads nothing (families whose
    attention output has no bias; GPT-2's c_proj bias would still be added)."""
    model = _trained_looking(make_lcirc(family, **LAYER, memory_sink=1e4))
    with torch.no_grad():
        logits = model(_ids(), memory=model.compress(sample_text[:600])).logits
        torch.testing.assert_close(logits, tiny_backbones[family](_ids()).logits)
        for block in model.adapter.gca.values():
            block.attn_sink.fill_(0.0)
        assert (model(_ids(), memory=model.compress(sample_text[:600])).logits - logits).abs().max() > 1e-3


def test_one_softmax_over_slots_and_whole_rows_has_one_sink(make_lcirc, sample_text):
    model = make_lcirc("llama", **LAYER, whole_segments=1, whole_reader=True, whole_softmax="joint", memory_sink=1.0)
    assert all(block.attn_sink is not None and block.whole.attn_sink is None for block in model.adapter.gca.values())
    memory = model.compress(sample_text[:1500])
    question = "What did " + model.tokenizer.decode(memory.segment_token_ids(2).tolist()[5:25]) + "?"
    seen = model.for_question(memory, question)
    block = next(iter(model.adapter.blocks().values()))
    weights: list[torch.Tensor] = []
    handle = block.register_forward_pre_hook(lambda m, args, kwargs: weights.append(m.attention_of_rows(*args, **kwargs)), with_kwargs=True)
    try:
        with torch.no_grad():
            model(_ids(), memory=seen)
    finally:
        handle.remove()
    slots, whole = weights[0]
    total = slots.sum(-1) + whole.sum(-1)
    assert whole.sum() > 0 and (total < 1).all() and (total > 0).all(), "slots and whole rows share the one sink's softmax"
    separate = make_lcirc("llama", **LAYER, whole_segments=1, whole_reader=True, memory_sink=1.0)
    assert all(block.whole.attn_sink is not None for block in separate.adapter.gca.values()), "separate softmaxes, a sink each"


def test_a_saved_adapter_grows_sinks_and_trains_them_with_the_gates(make_lcirc, sample_text, tmp_path):
    """``config_overrides={"memory_sink": x}`` on an adapter without sinks starts every sink at x, and training
    with ``train_only="attn_sink"`` moves the sinks alone, at the gates' learning rate."""
    model = _trained_looking(make_lcirc("llama", **LAYER))
    model.save_pretrained(tmp_path / "plain")
    grown = LCIRCModel.from_pretrained(tmp_path / "plain", backbone=model.backbone, tokenizer=model.tokenizer, config_overrides={"memory_sink": 2.5})
    try:
        assert all(torch.equal(b.attn_sink, torch.full_like(b.attn_sink, 2.5)) for b in grown.adapter.gca.values())
        before = {name: p.detach().clone() for name, p in grown.adapter.named_parameters()}
        config = TrainConfig(
            stage="lm", data=str(tmp_path / "book.txt"), output_dir=str(tmp_path / "run"), steps=2, lr=1e-3, gate_lr_scale=50,
            bptt="full", min_train_segment_len=32, max_train_segment_len=32, max_segments=2, loss_window=16, eval_every=0,
            save_every=2, train_only="attn_sink", seed=3,
        )
        (tmp_path / "book.txt").write_text(sample_text, encoding="utf-8")
        trainer = Trainer(config, model=grown)
        gate_group = trainer.parameter_groups()[-1]
        assert gate_group["lr"] == pytest.approx(5e-2) and len(gate_group["params"]) == len(grown.adapter.gca)
        trainer.train()
        changed = {name for name, p in grown.adapter.named_parameters() if not torch.equal(p.detach(), before[name])}
        assert changed and all(name.endswith("attn_sink") for name in changed), sorted(changed)[:3]
        grown.save_pretrained(tmp_path / "grown")
        assert json.loads((tmp_path / "grown" / "adapter_config.json").read_text())["memory_sink"] == 2.5
        again = LCIRCModel.from_pretrained(tmp_path / "grown", backbone=model.backbone, tokenizer=model.tokenizer)
        try:
            assert again.adapter_fingerprint == grown.adapter_fingerprint
        finally:
            again.injector.detach()
    finally:
        grown.injector.detach()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "high"])
def test_the_sink_must_be_a_finite_logit(value):
    with pytest.raises(ConfigError, match="memory_sink"):
        LCIRCConfig(reader="layer", memory_sink=value)


def test_the_paper_reader_has_no_sink():
    with pytest.raises(ConfigError, match="memory_sink"):
        LCIRCConfig(reader="paper", memory_sink=0.0)
