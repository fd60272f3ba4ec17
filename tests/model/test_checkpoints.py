"""Adapter and memory files: bit-exact round trips, and clear errors for foreign or damaged files."""

from __future__ import annotations

import json

import pytest
import torch

from lcirc_plugins import CompressedMemory, LCIRCConfig, LCIRCModel
from lcirc_plugins.errors import AdapterMismatchError, ConfigError, CorruptFileError, MemoryMismatchError


def _state(model: LCIRCModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.adapter.state_dict().items()}


def test_adapter_round_trip_is_bit_exact(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    model = make_lcirc("qwen3", query_dependent=True, gate_init=0.3)
    model.save_pretrained(tmp_path)
    model.injector.detach()
    loaded = LCIRCModel.from_pretrained(tmp_path, tiny_backbones["qwen3"], tokenizer=smollm2_tokenizer)
    try:
        original = _state(model)
        assert set(loaded.adapter.state_dict()) == set(original)
        assert all(torch.equal(original[k], v) for k, v in loaded.adapter.state_dict().items())
        assert loaded.config == model.config
        assert loaded.adapter_fingerprint == model.adapter_fingerprint
        assert not any(p.requires_grad for p in loaded.adapter.parameters()), "loaded adapters are frozen by default"
    finally:
        loaded.injector.detach()
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["backbone"]["hidden_size"] == 64 and config["format_version"] == 1


def test_memory_round_trip_is_bit_exact(make_lcirc, sample_text, tmp_path):
    model = make_lcirc("llama")
    memory = model.compress(sample_text[:3000], metadata={"title": "Treasure Island"})
    memory.save(tmp_path / "book.safetensors")
    loaded = CompressedMemory.load(tmp_path / "book.safetensors")
    assert torch.equal(loaded.features, memory.features)
    assert torch.equal(loaded.token_ids, memory.token_ids)
    assert torch.equal(loaded.spans, memory.spans)
    assert (loaded.num_chars, loaded.adapter_fingerprint, loaded.backbone, loaded.metadata) == (
        memory.num_chars,
        memory.adapter_fingerprint,
        memory.backbone,
        {"title": "Treasure Island"},
    )


@pytest.mark.parametrize("other", ["gemma3", "gpt2"])
def test_adapter_for_another_backbone_is_refused(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path, other):
    from transformers import AutoModelForCausalLM, LlamaConfig

    make_lcirc("llama").save_pretrained(tmp_path)
    torch.manual_seed(0)
    wider = AutoModelForCausalLM.from_config(
        LlamaConfig(vocab_size=len(smollm2_tokenizer), hidden_size=96, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4)
    )
    with pytest.raises(AdapterMismatchError, match="hidden_size=64"):
        LCIRCModel.from_pretrained(tmp_path, wider, tokenizer=smollm2_tokenizer)
    deeper_config = json.loads((tmp_path / "adapter_config.json").read_text())
    deeper_config["backbone"]["num_hidden_layers"] = 8
    (tmp_path / "adapter_config.json").write_text(json.dumps(deeper_config))
    with pytest.raises(AdapterMismatchError, match="num_hidden_layers=8"):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones[other], tokenizer=smollm2_tokenizer)


def test_corrupt_adapter_json_is_a_clear_error(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    make_lcirc("llama").save_pretrained(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"segment_len": 32,')
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer)


def test_edited_adapter_json_with_an_unknown_key_is_refused(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    make_lcirc("llama").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["num_experts"] = 4
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="unknown keys \\['num_experts'\\]"):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer)


def test_truncated_adapter_weights_are_a_clear_error(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    make_lcirc("llama").save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="not a readable safetensors file"):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer)


def test_weights_that_do_not_match_the_config_are_refused(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    make_lcirc("llama").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["perceiver_layers"] = 3
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CorruptFileError, match="missing keys"):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer)


def test_config_overrides_grow_a_saved_adapter_and_keep_its_weights(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    model = make_lcirc("llama", reader="layer", lora_rank=4, gate_init=0.3)
    model.save_pretrained(tmp_path)
    model.injector.detach()
    grown = LCIRCModel.from_pretrained(
        tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer, config_overrides={"query_dependent": True}
    )
    try:
        assert grown.config.query_dependent and grown.adapter.compressor.query_mixer is not None
        saved, state = _state(model), grown.adapter.state_dict()
        assert all(torch.equal(saved[k], state[k]) for k in saved), "every saved tensor is loaded"
        assert not grown.adapter.compressor.relevance.weight.any(), "the added QD scorer starts at its (zero) init"
    finally:
        grown.injector.detach()
    qd = make_lcirc("llama", reader="layer", lora_rank=4, query_dependent=True)
    qd.save_pretrained(tmp_path / "qd")
    qd.injector.detach()
    with pytest.raises(CorruptFileError, match="unexpected keys"):  # a shrunk adapter still refuses leftover weights
        LCIRCModel.from_pretrained(
            tmp_path / "qd", tiny_backbones["llama"], tokenizer=smollm2_tokenizer, config_overrides={"query_dependent": False}
        )


def test_truncated_memory_file_is_a_clear_error(make_lcirc, sample_text, tmp_path):
    path = make_lcirc("llama").compress(sample_text[:2000]).save(tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match="not a readable safetensors memory file"):
        CompressedMemory.load(path)


def test_a_safetensors_file_that_is_not_a_memory_is_refused(make_lcirc, tmp_path):
    model = make_lcirc("llama")
    model.save_pretrained(tmp_path)
    with pytest.raises(CorruptFileError, match="not an lcirc compressed memory"):
        CompressedMemory.load(tmp_path / "adapter_model.safetensors")


def test_memory_from_another_adapter_is_refused(make_lcirc, sample_text):
    memory = make_lcirc("llama", seed=0).compress(sample_text[:2000])
    other = make_lcirc("mistral-sliding", seed=1)
    with pytest.raises(MemoryMismatchError, match="made by adapter"):
        other.answer("Who is the captain?", memory, max_new_tokens=2)
    with pytest.raises(MemoryMismatchError, match="made by adapter"):
        other.compress("More text.", memory=memory)


def test_invalid_config_values_are_specific_errors():
    with pytest.raises(ConfigError, match="segment_len must be a positive integer"):
        LCIRCConfig(segment_len=0)
    with pytest.raises(ConfigError, match="must be <= max_segment_len"):
        LCIRCConfig(segment_len=4096, max_segment_len=2048)


def test_a_failed_load_leaves_the_backbone_without_hooks(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    from lcirc_plugins.model.injection import find_decoder_layers

    model = make_lcirc("llama")
    model.save_pretrained(tmp_path)
    model.injector.detach()
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CorruptFileError):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer)
    assert all(not layer._forward_pre_hooks for layer in find_decoder_layers(tiny_backbones["llama"]))


def test_a_backbone_loads_from_a_local_folder_and_round_trips_with_its_adapter(tiny_backbones, smollm2_tokenizer, tmp_path):
    folder = tmp_path / "tiny-qwen3"
    tiny_backbones["qwen3"].save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    model = LCIRCModel.from_backbone(str(folder), LCIRCConfig(num_latents=4, head_dim=16, gca_every=2, gate_init=0.2))
    model.save_pretrained(tmp_path / "adapter")
    again = LCIRCModel.from_pretrained(tmp_path / "adapter")  # the backbone is found from adapter_config.json
    assert again.backbone_name == str(folder) and again.adapter_fingerprint == model.adapter_fingerprint
    ids = torch.tensor([[5, 6, 7, 8]])
    memory = model.compress("A short text about a ship and a map.")
    with torch.no_grad():
        assert torch.equal(model(ids, memory=memory).logits, again(ids, memory=memory).logits)


def test_a_gguf_path_resolves_to_its_folder_and_file(tmp_path):
    from lcirc_plugins.errors import BackboneNotFoundError
    from lcirc_plugins.model.backbone import resolve_backbone

    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert resolve_backbone(str(tmp_path / "model.gguf")) == (str(tmp_path), "model.gguf")
    with pytest.raises(BackboneNotFoundError, match="does not exist"):
        resolve_backbone(str(tmp_path / "missing.gguf"))


def _rewrite_adapter_weights(path, edit) -> None:
    """Rewrite an adapter file with ``edit`` applied to its tensors and a checksum that matches the edit,
    as a foreign tool or a hand-edited checkpoint would: only the key/shape checks can catch it."""
    from safetensors.torch import load_file, save_file

    from lcirc_plugins.model.memory import tensors_sha256

    tensors = edit(load_file(str(path)))
    save_file(tensors, str(path), metadata={"format": "pt", "tensors_sha256": tensors_sha256(tensors)})


ADAPTER_EDITS = {
    "unexpected": (lambda t: {**t, "compressor.extra.weight": torch.zeros(3)}, "unexpected keys \\['compressor.extra.weight'\\]"),
    "missing": (lambda t: {k: v for k, v in t.items() if k != "gca.0.attn_gate"}, "missing keys \\['gca.0.attn_gate'\\]"),
    "wrong-shape": (lambda t: {**t, "compressor.initial_latents": torch.zeros(2, 3)}, "wrong shape, e.g. compressor.initial_latents"),
}


@pytest.mark.parametrize("edit", sorted(ADAPTER_EDITS))
def test_adapter_weights_with_unexpected_missing_or_misshapen_tensors_are_refused(
    make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path, edit
):
    make_lcirc("llama").save_pretrained(tmp_path)
    change, message = ADAPTER_EDITS[edit]
    _rewrite_adapter_weights(tmp_path / "adapter_model.safetensors", change)
    with pytest.raises(CorruptFileError, match=message):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer)


def _flip_bit_in(path, tensor: str) -> None:
    """Flip one bit inside one tensor's data, found through the safetensors header: the file still parses."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    begin, _end = json.loads(data[8 : 8 + header_len])[tensor]["data_offsets"]
    data[8 + header_len + begin + 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_adapter_weights_is_caught_by_the_checksum(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    make_lcirc("llama").save_pretrained(tmp_path)
    _flip_bit_in(tmp_path / "adapter_model.safetensors", "compressor.initial_latents")
    with pytest.raises(CorruptFileError, match="damaged: its tensors do not match the checksum"):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer)


@pytest.mark.parametrize("tensor", ["features", "spans"])
def test_a_flipped_bit_in_a_memory_file_is_caught_by_the_checksum(make_lcirc, sample_text, tmp_path, tensor):
    path = make_lcirc("llama").compress(sample_text[:2000]).save(tmp_path / "m.safetensors")
    _flip_bit_in(path, tensor)
    with pytest.raises(CorruptFileError, match="damaged: its tensors do not match the checksum"):
        CompressedMemory.load(path)


def test_an_adapter_directory_without_weights_is_a_clear_error(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    make_lcirc("llama").save_pretrained(tmp_path)
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(CorruptFileError, match="not found: the adapter directory is incomplete"):
        LCIRCModel.from_pretrained(tmp_path, tiny_backbones["llama"], tokenizer=smollm2_tokenizer)


def test_a_saved_memory_loaded_for_another_adapter_is_refused(make_lcirc, sample_text, tmp_path):
    path = make_lcirc("llama", seed=0).compress(sample_text[:2000]).save(tmp_path / "m.safetensors")
    loaded = CompressedMemory.load(path)
    other = make_lcirc("llama", seed=1)
    with pytest.raises(MemoryMismatchError, match="made by adapter"):
        other.answer("Who is the captain?", loaded, max_new_tokens=2)
