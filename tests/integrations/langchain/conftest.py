"""Fixtures for the LangChain integration tests: one tiny LCIRC model and one compressed text per session.

The model sits on its own tiny random Llama (with SmolLM2's real tokenizer and chat template), not on the
shared ``tiny_backbones`` one, so its hooks never stack with the models ``make_lcirc`` builds. Its gates
start open (``gate_init=0.5``), so the memory really changes what it generates.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from support import FAMILIES, TINY, one_torch_thread
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from lcirc_plugins import CompressedMemory, LCIRCConfig, LCIRCModel

TINY_LC = {**TINY, "gate_init": 0.5}  # the shared tiny config, gates open


@pytest.fixture(scope="session")
def lc_model(smollm2_tokenizer: PreTrainedTokenizerBase) -> Iterator[LCIRCModel]:
    torch.manual_seed(0)
    backbone = AutoModelForCausalLM.from_config(FAMILIES["llama"](len(smollm2_tokenizer))).eval()
    model = LCIRCModel(backbone, smollm2_tokenizer, LCIRCConfig(**TINY_LC))
    with one_torch_thread():
        model.adapter_fingerprint  # noqa: B018 - hash the weights once, up front
    yield model
    model.injector.detach()


@pytest.fixture(scope="session")
def book_text(sample_text: str) -> str:
    """About 2,000 tokens of Treasure Island: 60-odd memory segments on the tiny model."""
    return sample_text[:8000]


@pytest.fixture(scope="session")
def book_memory(lc_model: LCIRCModel, book_text: str) -> CompressedMemory:
    with one_torch_thread():
        return lc_model.compress(book_text, metadata={"source": "sample-book.txt"})


@pytest.fixture
def foreign_memory(make_lcirc) -> CompressedMemory:
    """A memory made by another adapter (same backbone family and tokenizer, other weights)."""
    return make_lcirc("llama", seed=1).compress("Fifteen men on the dead man's chest. Yo-ho-ho, and a bottle of rum!")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread_per_module() -> Iterator[None]:
    with one_torch_thread():
        yield
