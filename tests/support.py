"""Constants shared by test modules (importable as ``support``; a conftest must not be imported by name,
since a nested conftest.py would shadow it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from lcirc_plugins.data.shared import shared_data_dir

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"  # files the tests read: a public-domain book excerpt, benchmark samples, helper scripts
SAMPLE_BOOK = FIXTURES / "sample-book.txt"
# The project's shared books, corpus and haystack (outside the repository): one setting for every test.
SHARED_DATA = shared_data_dir()
COMMON = {
    "vocab_size": None,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}

# name -> config factory; small enough that the whole grid runs in seconds on 2 CPU cores.
FAMILIES: dict[str, Callable[[int], object]] = {
    "llama": lambda v: LlamaConfig(**{**COMMON, "vocab_size": v}),
    "mistral-sliding": lambda v: MistralConfig(**{**COMMON, "vocab_size": v}, sliding_window=16),
    "qwen2-sliding": lambda v: Qwen2Config(
        **{**COMMON, "vocab_size": v}, use_sliding_window=True, sliding_window=16, max_window_layers=2
    ),
    "qwen3": lambda v: Qwen3Config(**{**COMMON, "vocab_size": v}, head_dim=16),
    "gemma3": lambda v: Gemma3TextConfig(
        **{**COMMON, "vocab_size": v}, head_dim=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"] * 2
    ),
    "gpt2": lambda v: GPT2Config(vocab_size=v, bos_token_id=1, eos_token_id=2, n_embd=64, n_layer=4, n_head=4, n_positions=2048),
}


TINY = {"segment_len": 32, "max_segment_len": 64, "num_latents": 4, "head_dim": 16, "gca_every": 2, "window": 256}


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models run ~10x faster on one intra-op thread than on two of a busy 2-core box; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class RunsCodeWhenUnpickled:
    """A pickle payload that creates ``marker`` when unpickled: proof that a loader ran a file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@contextlib.contextmanager
def default_adapter_loading() -> Iterator[None]:
    """Around loading ``adapter="default"``: the untrained fallback's warning when no adapter is shipped, and no
    such warning when one is (then the shipped adapter itself is loaded)."""
    import warnings

    import pytest

    from lcirc_plugins.model.lcirc_model import DEFAULT_ADAPTER_DIR
    from lcirc_plugins.model.loading import UntrainedAdapterWarning

    if not DEFAULT_ADAPTER_DIR.is_dir():
        with pytest.warns(UntrainedAdapterWarning):
            yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedAdapterWarning)
        yield

