"""The 'layer' reader: per-layer memory read through each decoder layer's own attention, on every family."""

from __future__ import annotations

import pytest
import torch
from support import FAMILIES, one_torch_thread

from lcirc_plugins import CompressedMemory, LCIRCConfig, LCIRCModel
from lcirc_plugins.model.layer_memory import pool_windows
from lcirc_plugins.model.layer_reader import LayerReader, fold_positions
from lcirc_plugins.model.memory import MemoryRows
from lcirc_plugins.training.trainer import distillation_loss

FAMILY_NAMES = list(FAMILIES)
LAYER = {"reader": "layer", "lora_rank": 4}


def _ids(length: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(5, 1000, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_closed_gates_leave_logits_exactly_unchanged(make_lcirc, tiny_backbones, sample_text, family):
    model = make_lcirc(family, **LAYER, tokens_per_slot=4, slot_correction=True)
    memory = model.compress(sample_text[:500])
    with torch.no_grad():
        assert torch.equal(model(_ids(), memory=memory).logits, tiny_backbones[family](_ids()).logits)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_open_gates_read_the_memory(make_lcirc, tiny_backbones, sample_text, family):
    model = make_lcirc(family, **LAYER, gate_init=0.5)
    with torch.no_grad():
        reference = tiny_backbones[family](_ids()).logits
        first = model(_ids(), memory=model.compress(sample_text[:300])).logits
        second = model(_ids(), memory=model.compress(sample_text[300:600])).logits
    assert (first - reference).abs().max() > 1e-3
    assert (first - second).abs().max() > 1e-4, "a different memory must give different logits"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_copied_block_reproduces_its_layers_own_attention(make_lcirc, tiny_backbones, family):
    """Memory = the layer's own normed inputs for the same tokens and positions -> the layer's attention output."""
    model = make_lcirc(family, **LAYER)
    backbone, ids = tiny_backbones[family], _ids(12)
    layers = model.injector.layers
    inputs, outputs = {}, {}
    handles = []
    for index, block in model.adapter.blocks().items():
        handles.append(layers[index].register_forward_pre_hook(
            lambda m, a, k, i=index: inputs.__setitem__(i, a[0] if a else k["hidden_states"]), with_kwargs=True
        ))
        handles.append(block.parts.attention.register_forward_hook(lambda m, a, o, i=index: outputs.__setitem__(i, o[0])))
    with torch.no_grad():
        backbone(ids)
    for handle in handles:
        handle.remove()
    states = model.segment_states(ids)  # (1, T, M, d)
    positions = torch.arange(12.0)[None]
    for m, (index, block) in enumerate(model.adapter.blocks().items()):
        rotary = model.injector.rotary(index, positions, states) if model.injector.rotary else None
        query_rotary = model.injector.rotary(index, positions[:, -1:], states) if rotary else None
        with torch.no_grad():
            kv = block.project_memory(states[:, :, m], rotary)
            read = block.read(inputs[index][:, -1:], kv, None, query_rotary)
        own = outputs[index][:, -1:]
        if block.parts.post_norm is not None:
            own = block.parts.post_norm(own)
        assert torch.allclose(read, own, atol=1e-5), (family, index, (read - own).abs().max())


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cached_generation_keeps_memory_positions(make_lcirc, sample_text, family):
    model = make_lcirc(family, **LAYER, gate_init=0.5, tokens_per_slot=2)
    memory = model.compress(sample_text[:200])
    runs = [
        model.generate(_ids(5), memory=memory, max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=cache)
        for cache in (True, False)
    ]
    assert torch.equal(runs[0], runs[1])
    with torch.no_grad():  # the last step's logits from a full forward equal those of the cached decode
        full = model(runs[0], memory=memory).logits[:, -1]
        out = model(runs[0][:, :-1], memory=memory, use_cache=True)
        step = model(runs[0][:, -1:], memory=memory, cache=out.cache).logits[:, -1]
    assert torch.allclose(full, step, atol=1e-4)


def test_pooled_slots_equal_the_pooled_states_at_initialisation(make_lcirc, sample_text):
    model = make_lcirc("llama", **LAYER, tokens_per_slot=4, slot_correction=True)
    memory = model.compress(sample_text[:400])
    segments = torch.split(memory.token_ids.long(), model.config.segment_len)
    expected, centres, offset = [], [], 0
    for ids in segments:
        pooled, where = pool_windows(model.segment_states(ids[None]), None, 4)
        expected.append(pooled[0])
        centres.append(where[0] + offset)
        offset += len(ids)
    assert torch.equal(memory.features, torch.cat(expected))
    assert torch.equal(memory.positions, torch.cat(centres))
    assert memory.positions[0] == 1.5, "the first window holds tokens 0-3"


def test_uncompressed_memory_is_the_layer_states(make_lcirc, sample_text):
    model = make_lcirc("qwen3", **LAYER)
    memory = model.compress(sample_text[:100])
    states = model.segment_states(memory.token_ids.long()[None, : model.config.segment_len])[0]
    assert torch.equal(memory.features[: model.config.segment_len], states)
    assert torch.equal(memory.positions, torch.arange(float(memory.num_tokens)))


def test_compressing_in_two_calls_equals_one(make_lcirc, sample_text):
    model = make_lcirc("llama", **LAYER, tokens_per_slot=4, slot_correction=True, gate_init=0.3)
    with torch.no_grad():
        model.adapter.compressor.slot_gate.fill_(0.5)  # the correction takes part
    text = sample_text[:900]
    whole = model.compress(text)
    parts = model.compress(text[450:], memory=model.compress(text[:450]))
    assert torch.equal(whole.token_ids, parts.token_ids)
    assert torch.allclose(whole.features, parts.features, atol=1e-5)
    assert torch.allclose(whole.positions, parts.positions, atol=1e-4)
    assert torch.allclose(whole.latents, parts.latents, atol=1e-5)


def test_layer_memory_round_trips_through_its_file(make_lcirc, sample_text, tmp_path):
    model = make_lcirc("gemma3", **LAYER, tokens_per_slot=2, slot_correction=True)
    memory = model.compress(sample_text[:300])
    loaded = CompressedMemory.load(memory.save(tmp_path / "m.safetensors"))
    for name in ("features", "positions", "latents", "token_ids"):
        assert torch.equal(getattr(loaded, name), getattr(memory, name)), name
    assert "layers=3" in repr(loaded)


def test_adapter_stores_only_the_deltas_and_round_trips(make_lcirc, tiny_backbones, smollm2_tokenizer, sample_text, tmp_path):
    model = make_lcirc("mistral-sliding", **LAYER, tokens_per_slot=4, slot_correction=True, gate_init=0.2)
    with torch.no_grad():
        for p in model.adapter.parameters():
            p.add_(0.01)
    keys = list(model.adapter.state_dict())
    assert not any(part in k for k in keys for part in ("q_proj", "k_proj", "o_proj", "layernorm")), keys
    assert any(k.endswith("lora.q.up.weight") for k in keys)
    model.save_pretrained(tmp_path)
    memory = model.compress(sample_text[:300])
    model.injector.detach()
    loaded = LCIRCModel.from_pretrained(tmp_path, tiny_backbones["mistral-sliding"], tokenizer=smollm2_tokenizer)
    try:
        assert loaded.config.reader == "layer" and loaded.config.tokens_per_slot == 4
        assert loaded.adapter_fingerprint == model.adapter_fingerprint
        assert torch.equal(loaded.compress(sample_text[:300]).features, memory.features)
    finally:
        loaded.injector.detach()


def test_lora_rank_zero_is_the_pure_copy(make_lcirc):
    model = make_lcirc("llama", **{**LAYER, "lora_rank": 0})
    assert all(isinstance(b, LayerReader) and b.lora is None for b in model.adapter.blocks().values())
    assert sorted(model.adapter.state_dict()) == [f"gca.{i}.attn_gate" for i in (1, 2, 3)]


def test_distillation_loss_is_zero_when_student_and_teacher_agree():
    logits = torch.randn(1, 6, 50)
    labels = torch.tensor([[-100, -100, -100, 7, 8, 9]])
    assert distillation_loss(logits, logits.clone(), labels).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, torch.randn(1, 6, 50), labels).item() > 0.1


def test_distillation_where_right_reads_only_the_positions_the_teacher_predicts():
    student, teacher = torch.randn(1, 6, 50), torch.randn(1, 6, 50)
    labels = torch.tensor([[-100, -100, -100, 7, 8, 9]])
    teacher[0, 3, 8] = teacher[0, 2, 7] = 100.0  # right about tokens 4 (8) and 3 (7); position 4 predicts token 5 (9)
    teacher[0, 4, 9] = -100.0  # wrong there
    only_right = distillation_loss(student, teacher, labels, where_right=True)
    kept = torch.tensor([[-100, -100, -100, 7, 8, -100]])
    assert only_right.item() == pytest.approx(distillation_loss(student, teacher, kept).item())
    assert only_right.item() != pytest.approx(distillation_loss(student, teacher, labels).item())
    wrong_everywhere = torch.full((1, 6, 50), 0.0)
    wrong_everywhere[..., 0] = 100.0
    assert distillation_loss(student, wrong_everywhere, labels, where_right=True).item() == 0.0


def _training_module(model: LCIRCModel, **train: float):
    """A training module and a QA example: 16 context tokens, then 8 decoder tokens whose last 4 are labelled."""
    from lcirc_plugins.training.config import TrainConfig
    from lcirc_plugins.training.data import TrainExample
    from lcirc_plugins.training.trainer import LCIRCTrainingModule

    model.train()
    ids = _ids(8, seed=4)[0]
    labels = ids.clone()
    labels[:4] = -100
    return LCIRCTrainingModule(model, TrainConfig(stage="qa", **train)), TrainExample([_ids(16, seed=3)], ids, labels)


def test_distillation_gradient_reaches_only_adapter_weights(make_lcirc, tiny_backbones):
    model = make_lcirc("llama", **LAYER, gate_init=0.3, tokens_per_slot=2)
    module, example = _training_module(model, distill=1.0)
    ids, labels = example.input_ids, example.labels
    student = model(ids[None], memory=module.memory(example), labels=labels[None]).logits
    kl = distillation_loss(student, module.teacher(example, with_attention=False)[0][:, 16:], labels[None])
    kl.backward()
    assert kl.item() > 0
    assert all(p.grad is None for p in tiny_backbones["llama"].parameters())
    grads = [p.grad for p in model.adapter.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.adapter.zero_grad(set_to_none=True)


def test_config_defaults_and_validation():
    config = LCIRCConfig(reader="layer")
    assert config.resolve_gca_layers(30) == list(range(8, 30)), "the last three quarters of the layers"
    assert LCIRCConfig().resolve_gca_layers(30) == [0, 5, 10, 15, 20, 25, 29], "the paper reader is unchanged"
    restored = LCIRCConfig.from_dict({**config.to_dict(), "tokens_per_slot": 8, "slot_correction": True})
    assert restored.tokens_per_slot == 8 and restored.reader == "layer"
    from lcirc_plugins.errors import ConfigError

    with pytest.raises(ConfigError, match="reader must be one of"):
        LCIRCConfig(reader="copy")
    with pytest.raises(ConfigError, match="lora_rank"):
        LCIRCConfig(reader="layer", lora_rank=-1)
    with pytest.raises(ConfigError, match="slot_selection"):
        LCIRCConfig(reader="layer", slot_selection=True, slot_correction=True)
    selecting = LCIRCConfig(reader="layer", slot_selection=True)
    assert selecting.resolve_salience_layer(30) == 15 and config.resolve_salience_layer(30) is None
    with pytest.raises(ConfigError, match="salience_layer 3 must be one of the memory layers"):
        LCIRCConfig(reader="layer", slot_selection=True, salience_layer=3).resolve_salience_layer(30)


def test_folded_positions_keep_near_distances_and_order_and_end_at_the_horizon():
    far = -torch.tensor([[30_000.0, 20_000.0, 5_000.0, 2_000.0, 10.0, 1.0], [9_000.0, 3_000.0, 2_048.0, 50.0, 2.0, 1.0]])
    folded = fold_positions(far, 6144)
    assert torch.equal(folded[:, -3:], far[:, -3:]), "the nearest third of the horizon keeps exact distances"
    assert folded.min(dim=1).values.tolist() == [-6144.0, -6144.0], "each row's farthest slot sits at the horizon"
    assert bool((folded.diff(dim=1) > 0).all()), "text order is kept"
    short = -torch.tensor([[6_000.0, 100.0, 1.0]])
    assert torch.equal(fold_positions(short, 6144), short), "a memory that fits the horizon is read as stored"
    assert torch.equal(fold_positions(far, 0), far), "horizon 0: exact distances however far"


def test_the_position_horizon_defaults_to_three_quarters_of_the_backbones_context():
    from lcirc_plugins.errors import ConfigError

    assert LCIRCConfig(reader="layer").resolve_position_horizon(8192) == 6144
    assert LCIRCConfig(reader="layer", position_horizon=0).resolve_position_horizon(8192) == 0
    assert LCIRCConfig(reader="layer").resolve_position_horizon(None) == 0, "no known context: exact positions"
    with pytest.raises(ConfigError, match="position_horizon"):
        LCIRCConfig(reader="layer", position_horizon=-1)


def test_the_decoder_reads_a_long_memory_within_the_position_horizon(make_lcirc, sample_text):
    model = make_lcirc("llama", **LAYER, gate_init=0.5, position_horizon=48)
    memory = model.compress(sample_text[:600])
    assert memory.num_tokens > 48
    folded = model.memory_states(memory).positions
    assert float(folded.min()) == -48.0 and torch.equal(folded[0, -3:], memory.positions[-3:] - memory.num_tokens)
    model.config.position_horizon = 0
    assert torch.equal(model.memory_states(memory).positions[0], memory.positions - memory.num_tokens)


def test_the_salience_target_skips_the_sink_and_sharpens_toward_the_top():
    from lcirc_plugins.training.trainer import attention_to_context

    rows = torch.tensor([0.7, 0.05, 0.15, 0.1, 0.0])  # every position's attention: context of 3, then 2 more
    attention = [rows.expand(1, 2, 5, 5).clone()]
    labels = torch.tensor([[7, 7]])  # both decoder tokens labelled: no prompt row to compare with
    plain = attention_to_context(attention, labels, 3)
    assert torch.allclose(plain, torch.tensor([[0.0, 0.25, 0.75]]))
    sharp = attention_to_context(attention, labels, 3, temperature=0.5)
    assert torch.allclose(sharp, torch.tensor([[0.0, 0.1, 0.9]]))


def test_the_salience_target_keeps_what_the_answer_reads_more_than_the_prompt():
    from lcirc_plugins.training.trainer import attention_to_context

    attention = torch.zeros(1, 1, 7, 7)  # 4 context tokens, then a decoder input of 3
    attention[0, 0, 4] = torch.tensor([0.5, 0.3, 0.1, 0.1, 0.0, 0.0, 0.0])  # a prompt position: parks on tokens 0 and 1
    attention[0, 0, 5] = torch.tensor([0.4, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0])  # the position that predicts the answer
    labels = torch.tensor([[-100, -100, 7]])  # decoder position 1 (row 5) predicts the labelled token
    target = attention_to_context([attention], labels, 4)
    assert torch.allclose(target, torch.tensor([[0.0, 0.0, 1.0, 0.0]])), "token 1 is read as much by the prompt: not salient"


def test_r0_training_makes_the_own_memory_matter(smollm2_tokenizer, tmp_path):
    """Rung R0 on a tiny random Llama: uncompressed per-layer memory, trained briefly, reads what it holds.

    The task is the smallest one that only the memory can solve (repeat the one digit in the memory); a
    larger initialisation gives the tiny model logits wide enough to be confident at all.
    """
    import json
    import random

    from transformers import AutoModelForCausalLM

    from lcirc_plugins.training.config import TrainConfig
    from lcirc_plugins.training.trainer import Trainer

    rng = random.Random(0)
    data = tmp_path / "digits.jsonl"
    data.write_text("".join(json.dumps({"context": d, "question": "Repeat.", "answer": d}) + "\n" for d in (rng.choice("0123456789") for _ in range(400))))
    torch.manual_seed(0)
    config = FAMILIES["llama"](len(smollm2_tokenizer))
    config.initializer_range = 0.1
    backbone = AutoModelForCausalLM.from_config(config).eval()
    model = LCIRCModel(
        backbone, smollm2_tokenizer, LCIRCConfig(reader="layer", lora_rank=32, gate_init=0.1, segment_len=16, max_segment_len=16, window=128)
    )
    train = TrainConfig(
        stage="qa", data=str(data), output_dir=str(tmp_path / "run"), steps=120, lr=1e-2, bptt="full", min_train_segment_len=16,
        max_train_segment_len=16, min_segments=1, max_segments=1, eval_every=120, eval_examples=8, save_every=1000, resume=False,
    )
    try:
        Trainer(train, model=model).train()
    finally:
        model.injector.detach()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = metrics[-1]
    assert final["eval_loss"] < final["eval_loss_other_memory"] - 1.0, final
    assert final["eval_loss"] < final["eval_loss_no_memory"] - 2.0, final


def test_qd_scores_stored_slots_for_the_question_without_reading_the_book(make_lcirc, tiny_backbones, sample_text):
    model = make_lcirc("llama", **LAYER, tokens_per_slot=4, slot_correction=True, query_dependent=True, gate_init=0.3)
    memory = model.compress(sample_text[:400])
    untrained = model.read_memories([memory], "Who is the captain?")
    assert torch.equal(untrained.bias, torch.zeros(memory.num_vectors)), "an untrained QD step changes nothing"
    with torch.no_grad():
        model.adapter.compressor.relevance.weight.normal_(std=3.0)
        model.adapter.compressor.query_mixer.attn_gate.fill_(1.0)
    memory = model.compress(sample_text[:400])  # the adapter changed: its memories are made again
    calls = []
    layer = model.injector.layers[0]
    handle = layer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        first = model.read_memories([memory], "Who is the captain?")
        second = model.read_memories([memory], "Where is the treasure buried?")
    finally:
        handle.remove()
    assert not calls, "a question must not need a forward over the book"
    assert first.bias.shape == (memory.num_vectors,) and not torch.allclose(first.bias, second.bias)
    unbiased = MemoryRows(first.features, first.positions, first.span)
    with torch.no_grad():
        logits = [model(_ids(), memory=rows).logits for rows in (first, unbiased)]
    assert (logits[0] - logits[1]).abs().max() > 1e-4, "the readers must see the relevance bias"


def test_an_overlong_prompt_is_compressed_into_layer_memory(make_lcirc, sample_text):
    model = make_lcirc("qwen2-sliding", **LAYER, tokens_per_slot=4, window=64)
    prepared = model.prepare_prompt(sample_text[:1200], max_new_tokens=8)
    assert prepared.input_ids.shape[1] == 56 and prepared.compressed_tokens > 0
    rows = prepared.rows
    assert rows.features.dim() == 3 and rows.positions.max() < 0, "the compressed head sits before the tail"
    assert model.generate_text(prepared, max_new_tokens=4)[1] == 4


def test_selected_slots_are_the_most_salient_tokens_in_text_order(make_lcirc, sample_text):
    model = make_lcirc("gemma3", **LAYER, tokens_per_slot=8, slot_selection=True)
    memory = model.compress(sample_text[:300])
    ids = memory.token_ids.long()[None, : model.config.segment_len]
    states = model.segment_states(ids)
    scores = model.adapter.compressor.scores(states)[0]
    middle = model.config.gca_layers.index(model.config.salience_layer)
    assert model.config.salience_layer == min(model.config.gca_layers, key=lambda i: abs(i - len(model.injector.layers) // 2))
    assert torch.equal(scores, model.adapter.compressor.salience(states[0, :, middle]).squeeze(-1)), "the scorer reads the middle layer"
    chosen = memory.positions[: model.config.segment_len // 8].long()
    assert torch.equal(chosen, scores.topk(len(chosen)).indices.sort().values)
    assert torch.equal(memory.features[: len(chosen)], states[0, chosen])


def test_the_salience_scorer_learns_where_the_backbone_looks(make_lcirc):
    from lcirc_plugins.training.trainer import attention_to_context

    model = make_lcirc("qwen3", **LAYER, tokens_per_slot=4, slot_selection=True, gate_init=0.2)
    module, example = _training_module(model, salience_distill=1.0)
    _, attention = module.teacher(example, with_attention=True)
    target = attention_to_context(attention, example.labels[None], 16)
    assert target.shape == (1, 16) and torch.allclose(target.sum(), torch.tensor(1.0))
    assert target[0, 0] == 0, "the attention sink is not a place to keep"
    assert model.backbone.config._attn_implementation != "eager", "the teacher's eager attention is switched back"
    module(example).backward()
    scorer = model.adapter.compressor.salience.weight
    assert scorer.grad is not None and scorer.grad.abs().sum() > 0
    model.adapter.zero_grad(set_to_none=True)


def test_qd_with_selected_slots_reads_their_first_layer_states(make_lcirc, sample_text):
    model = make_lcirc("gpt2", **LAYER, tokens_per_slot=8, slot_selection=True, query_dependent=True, gate_init=0.3)
    with torch.no_grad():
        model.adapter.compressor.relevance.weight.normal_(std=3.0)
        model.adapter.compressor.query_mixer.attn_gate.fill_(1.0)
    memory = model.compress(sample_text[:300])
    assert memory.latents is None
    first, second = (model.read_memories([memory], q).bias for q in ("Who is the captain?", "Where is the map?"))
    assert first.shape == (memory.num_vectors,) and not torch.allclose(first, second)


def test_grouped_memory_attention_equals_attention_over_repeated_heads(make_lcirc, sample_text):
    """The read and the probabilities provenance uses equal textbook GQA attention (key/value heads repeated,
    fused attention), QD bias and padding included."""
    model = make_lcirc("qwen3", **LAYER, gate_init=0.5, tokens_per_slot=4)
    index, block = next(iter(model.adapter.blocks().items()))
    states = model.segment_states(_ids(12, seed=7))[:, :, 0]
    positions = torch.arange(12.0)[None]
    kv = block.project_memory(states, model.injector.rotary(index, positions, states))
    mask = torch.tensor([[True] * 10 + [False] * 2])
    bias = torch.randn(1, 12)
    hidden = torch.randn(1, 3, 64)
    query_rotary = model.injector.rotary(index, torch.arange(12.0, 15.0)[None], states)
    with torch.no_grad():
        weights = block.attention_weights(hidden, kv, mask, query_rotary, bias)
        groups = block.parts.num_heads // block.parts.num_kv_heads
        assert groups > 1, "the grouped read is checked against repeated key/value heads"
        k, v = (x.repeat_interleave(groups, dim=1) for x in (kv[0].transpose(-1, -2), kv[1]))  # keys are stored transposed
        q = block._query(hidden, query_rotary)
        logits = q @ k.transpose(-1, -2) * block.parts.scaling + bias[:, None, None] + torch.where(mask, 0.0, -torch.inf)[:, None, None]
        assert torch.allclose(weights, logits.softmax(dim=-1), atol=1e-6)
        heads = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=(bias + torch.where(mask, 0.0, -torch.inf))[:, None, None], scale=block.parts.scaling
        )
        heads = heads.transpose(1, 2).reshape(1, 3, -1)
        expected = block.parts.output(heads) + block._delta("o", heads)
        assert torch.allclose(block.read(hidden, kv, mask, query_rotary, bias), expected, atol=1e-5)
    assert torch.all(weights[..., 10:] == 0) and torch.allclose(weights.sum(-1), torch.ones(1, weights.shape[1], 3))


def test_held_out_answers_count_exact_and_contained_replies(make_lcirc, smollm2_tokenizer):
    """``eval_answer_exact`` wants the label token for token; ``eval_answer_contains`` its text anywhere in the reply."""
    from lcirc_plugins.training.data import TrainExample
    from lcirc_plugins.training.trainer import answer_matches

    model = make_lcirc("llama", **LAYER, gate_init=0.3)
    model.eval()
    prompt = torch.tensor(smollm2_tokenizer("The pass key is")["input_ids"])
    memory = model.compress_ids(_ids(16, seed=3)[0])
    reply = model.generate(prompt[None], memory=memory, max_new_tokens=6, do_sample=False)[0, len(prompt) :]

    def example(answer: torch.Tensor) -> TrainExample:
        ids = torch.cat([prompt, answer])
        return TrainExample([], ids, torch.cat([torch.full_like(prompt, -100), answer]))

    assert answer_matches(model, example(reply[:3]), memory) == (True, True)
    later = reply[2:4]  # what the reply says after its first two tokens
    assert smollm2_tokenizer.decode(later).strip() in smollm2_tokenizer.decode(reply)
    assert answer_matches(model, example(later), memory)[1] is True
    assert answer_matches(model, example(later), memory)[0] is (torch.equal(reply[:2], later))
    other = torch.tensor(smollm2_tokenizer(" zebra quartet")["input_ids"])
    assert "zebra quartet" not in smollm2_tokenizer.decode(reply)
    assert answer_matches(model, example(other), memory) == (False, False)
