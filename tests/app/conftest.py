"""Fixtures for the app tests: one tiny query-dependent LCIRC model for the server tests, a small book.

The server model sits on its own tiny random Llama (SmolLM2's real tokenizer and chat template), so its
hooks never stack with the models ``make_lcirc`` builds on the shared tiny backbones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support import FAMILIES, SAMPLE_BOOK, TINY, one_torch_thread
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from lcirc_plugins import LCIRCConfig, LCIRCModel

APP_CONFIG = {**TINY, "gate_init": 0.5, "query_dependent": True}
BOOK_CHARS = 6000  # ~1,500 tokens: about 50 segments on the tiny model, compressed in about a second


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread_per_module() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def app_model(smollm2_tokenizer: PreTrainedTokenizerBase) -> Iterator[LCIRCModel]:
    torch.manual_seed(0)
    backbone = AutoModelForCausalLM.from_config(FAMILIES["llama"](len(smollm2_tokenizer))).eval()
    model = LCIRCModel(backbone, smollm2_tokenizer, LCIRCConfig(**APP_CONFIG))
    yield model
    model.injector.detach()


@pytest.fixture(scope="module")
def untrained_model(smollm2_tokenizer: PreTrainedTokenizerBase) -> Iterator[LCIRCModel]:
    """The same tiny Llama with closed gates: what an untrained adapter looks like to the app."""
    torch.manual_seed(0)
    backbone = AutoModelForCausalLM.from_config(FAMILIES["llama"](len(smollm2_tokenizer))).eval()
    model = LCIRCModel(backbone, smollm2_tokenizer, LCIRCConfig(**{**APP_CONFIG, "gate_init": 0.0}))
    yield model
    model.injector.detach()


@pytest.fixture(scope="session")
def small_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The start of tests/fixtures/sample-book.txt (Treasure Island) with a chapter heading, as an upload."""
    text = SAMPLE_BOOK.read_text(encoding="utf-8-sig")[:BOOK_CHARS]
    path = tmp_path_factory.mktemp("books") / "treasure island.txt"
    path.write_text(text + "\n\nCHAPTER II\n\nThe captain ate Zanzibar marmalade by the fire.\n", encoding="utf-8")
    return path


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """One file per kind of bad upload, with the word its message must contain."""
    files = {}
    (tmp_path / "empty.txt").write_bytes(b"")
    files["empty"] = tmp_path / "empty.txt"
    (tmp_path / "blank.md").write_text("   \n\n  \t\n")
    files["blank"] = tmp_path / "blank.md"
    (tmp_path / "image.txt").write_bytes(bytes(range(256)) * 40)
    files["binary"] = tmp_path / "image.txt"
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \x00\x01")
    files["corrupt-pdf"] = tmp_path / "broken.pdf"
    (tmp_path / "broken.epub").write_bytes(b"PK\x03\x04 not a zip")
    files["corrupt-epub"] = tmp_path / "broken.epub"
    (tmp_path / "program.exe").write_bytes(b"MZ\x90\x00")
    files["unsupported"] = tmp_path / "program.exe"
    return files
