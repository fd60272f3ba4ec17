"""Fewer memory layers: a pruned adapter reads as the full one with the other layers' readers closed."""

from __future__ import annotations

import pytest
import torch
from support import one_torch_thread

from lcirc_plugins import LCIRCModel
from lcirc_plugins.cli import main
from lcirc_plugins.errors import ConfigError, MemoryMismatchError
from lcirc_plugins.model.adapter import WEIGHTS_NAME, keep_memory_layers

LAYERS = {"reader": "layer", "lora_rank": 4, "tokens_per_slot": 8, "slot_selection": True, "gca_layers": [0, 1, 2, 3]}
WHOLE = {**LAYERS, "whole_reader": True, "whole_softmax": "joint", "whole_segments": 1, "query_dependent": True}


@pytest.fixture
def saved_adapter(make_lcirc, tmp_path):
    """A trained-looking QD adapter with whole readers at all four layers of a tiny llama, saved."""
    model = make_lcirc("llama", **WHOLE, salience_layer=1)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.adapter.named_parameters():
            if name.endswith("attn_gate"):
                param.fill_(0.5)
            elif ".up." in name or "relevance" in name:  # the parts that start at zero
                param.normal_(std=0.05)
    return model, model.save_pretrained(tmp_path / "full")


def _answer_logits(model: LCIRCModel, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    with one_torch_thread(), torch.no_grad():
        memory = model.compress(text)
        prepared = model.prepare_answer("Who kept the map of the island?", memory, max_new_tokens=8)
        return model(prepared.input_ids, memory=prepared.rows).logits, memory.features


def test_a_pruned_adapter_reads_as_the_full_one_with_the_other_layers_closed(saved_adapter, sample_text, tmp_path):
    full, directory = saved_adapter
    pruned = LCIRCModel.from_pretrained(keep_memory_layers(directory, [0, 1, 3], tmp_path / "pruned"), backbone=full.backbone, tokenizer=full.tokenizer)
    try:
        assert pruned.config.gca_layers == [0, 1, 3] and sorted(pruned.adapter.gca) == ["0", "1", "3"]
        text = sample_text[:1500]
        logits, features = _answer_logits(pruned, text)
        with torch.no_grad():
            full.adapter.gca["2"].attn_gate.zero_()
            full.adapter.gca["2"].whole.attn_gate.zero_()
        closed_logits, full_features = _answer_logits(full, text)
        assert features.shape[1] == 3 and torch.equal(features, full_features[:, [0, 1, 3]]), "the memory stores the kept layers only"
        torch.testing.assert_close(logits, closed_logits, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            full.adapter.gca["2"].attn_gate.fill_(0.5)
        opened_logits, _ = _answer_logits(full, text)
        assert (opened_logits - logits).abs().max() > 1e-3, "the dropped layer's reader did read the memory"
        with pytest.raises(MemoryMismatchError, match="compress the text again"):
            pruned.prepare_answer("Who?", full.compress(text[:600]))
    finally:
        pruned.injector.detach()


def test_pruning_refuses_to_drop_what_the_compressor_reads_and_writes_nothing(saved_adapter, tmp_path):
    _, directory = saved_adapter
    refusals = {(1, 2, 3): "first memory layer", (0, 2, 3): "salience layer", (0, 1, 7): "keep [7]", (): "keep no layer"}
    for keep, message in refusals.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            keep_memory_layers(directory, keep, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_an_adapter_config_that_leaves_its_layers_to_the_backbone_is_refused(saved_adapter, tmp_path):
    _, directory = saved_adapter
    config = directory / "adapter_config.json"
    config.write_text(config.read_text().replace('"salience_layer": 1', '"salience_layer": null'))
    with pytest.raises(ConfigError, match="does not name its memory layers"):
        keep_memory_layers(directory, [0, 1, 3], tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_prune_command_writes_an_adapter_with_the_kept_layers_weights_only(saved_adapter, tmp_path, capsys):
    _, directory = saved_adapter
    code = main(["prune", str(directory), "--keep-layers", "0", "1", "3", "-o", str(tmp_path / "pruned")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "layers [0, 1, 3]" in out
    from safetensors.torch import load_file

    names = load_file(str(tmp_path / "pruned" / WEIGHTS_NAME))
    assert not [n for n in names if n.startswith("gca.2.")] and [n for n in names if n.startswith("gca.3.")]
    code = main(["prune", str(directory), "--keep-layers", "1", "3", "-o", str(tmp_path / "never")])
    assert code == 2 and "first memory layer" in capsys.readouterr().err
