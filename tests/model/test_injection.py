"""Gated cross-attention injection into decoder layers of every family in the FAMILIES grid."""

from __future__ import annotations

import pytest
import torch
from support import FAMILIES

from lcirc_plugins.errors import UnsupportedBackboneError
from lcirc_plugins.model.injection import find_decoder_layers

FAMILY_NAMES = list(FAMILIES)


def _ids(batch: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(5, 1000, (batch, length), generator=torch.Generator().manual_seed(1))


def _memory(dim: int = 64, vectors: int = 12) -> torch.Tensor:
    return torch.randn(vectors, dim, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_closed_gates_leave_logits_exactly_unchanged(make_lcirc, tiny_backbones, family):
    model = make_lcirc(family)
    ids = _ids()
    with torch.no_grad():
        reference = tiny_backbones[family](ids).logits
        injected = model(ids, memory=_memory()).logits
    assert (injected - reference).abs().max().item() < 1e-5
    assert torch.equal(injected, reference)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_open_gates_change_logits(make_lcirc, tiny_backbones, family):
    model = make_lcirc(family, gate_init=0.5)
    ids = _ids()
    with torch.no_grad():
        reference = tiny_backbones[family](ids).logits
        injected = model(ids, memory=_memory()).logits
        without_memory = model(ids).logits
    assert (injected - reference).abs().max().item() > 1e-3
    assert torch.equal(without_memory, reference), "no memory must mean the unmodified LM"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cache_on_and_off_give_the_same_greedy_tokens(make_lcirc, family):
    model = make_lcirc(family, gate_init=0.5)
    ids = _ids(batch=1, length=6)
    outputs = [
        model.generate(ids, memory=_memory(), max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=cache)
        for cache in (True, False)
    ]
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_hidden_states_count_is_unchanged(make_lcirc, tiny_backbones, family):
    model = make_lcirc(family, gate_init=0.5)
    ids = _ids()
    with torch.no_grad():
        reference = tiny_backbones[family](ids, output_hidden_states=True).hidden_states
        injected = model(ids, memory=_memory(), output_hidden_states=True).hidden_states
    assert len(injected) == len(reference)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_backbone_state_dict_is_untouched_by_attach_and_detach(tiny_backbones, smollm2_tokenizer, family):
    from lcirc_plugins import LCIRCConfig, LCIRCModel

    backbone = tiny_backbones[family]
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = LCIRCModel(backbone, smollm2_tokenizer, LCIRCConfig(num_latents=4, head_dim=16, gca_every=2, gate_init=0.5))
    assert list(backbone.state_dict()) == list(before)
    ids = _ids()
    with torch.no_grad():
        changed = model(ids, memory=_memory()).logits
    model.injector.detach()
    with torch.no_grad():
        after_detach = backbone(ids).logits
        assert not torch.equal(changed, after_detach)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert all(not layer._forward_pre_hooks for layer in find_decoder_layers(backbone))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_only_adapter_parameters_get_gradients_with_gradient_checkpointing(make_lcirc, tiny_backbones, family):
    model = make_lcirc(family, gate_init=0.5)
    backbone = tiny_backbones[family]
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    try:
        ids = _ids()
        features = model.adapter.compressor.compress(model.embed_tokens, [ids[0].repeat(8)], 32)[0]
        loss = model(ids, memory=features, labels=ids).loss
        loss.backward()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        optimizer.step()
    finally:
        backbone.activation_checkpointing_disable()
        model.eval()
    assert all(p.grad is None for p in backbone.parameters())
    grads = {n: p.grad for n, p in model.adapter.named_parameters()}
    assert grads["compressor.initial_latents"] is not None and grads["compressor.initial_latents"].abs().sum() > 0
    assert all(g is not None for n, g in grads.items() if n.startswith("gca.")), "every GCA block must be trained"
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_decoder_layers_are_found_by_explicit_path(tiny_backbones):
    backbone = tiny_backbones["llama"]
    assert find_decoder_layers(backbone, "model.layers") is backbone.model.layers


def test_a_wrong_decoder_layers_path_is_a_clear_error(tiny_backbones):
    with pytest.raises(UnsupportedBackboneError, match="does not exist"):
        find_decoder_layers(tiny_backbones["llama"], "model.blocks")


def test_two_adapters_on_one_backbone_only_run_their_own_blocks(make_lcirc, tiny_backbones):
    first = make_lcirc("llama", gate_init=0.5, seed=0)
    second = make_lcirc("llama", gate_init=0.5, seed=1)
    ids = _ids()
    with torch.no_grad():
        reference = tiny_backbones["llama"](ids).logits
        out_second = second(ids, memory=_memory()).logits
        first.injector.detach()
        alone = second(ids, memory=_memory()).logits
    assert not torch.equal(out_second, reference)
    assert torch.equal(out_second, alone), "the first adapter's hooks must ignore the second adapter's memory"
