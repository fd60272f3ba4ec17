"""The converted-backbone cache: written once, read back bit for bit, rebuilt when damaged, keyed by its source.

Most tests run the cache on a tiny random Llama with SmolLM2's real tokenizer (seconds); the slow one goes
through ``load_backbone`` with the real GGUF file, cold then warm.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import FAMILIES, one_torch_thread
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from lcirc_plugins.cli import main
from lcirc_plugins.model import backbone as backbone_module
from lcirc_plugins.model.backbone_cache import (
    WEIGHTS,
    DamagedCacheWarning,
    backbones_dir,
    cache_entries,
    cache_key,
    cache_key_fields,
    cache_root,
    cached_backbone,
)

CHAT = [{"role": "user", "content": "Who is Long John Silver? Ahoy, matey."}]


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("LCIRC_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The 'slow-format file' the entry is keyed by (its bytes are all that matter to the key)."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF tiny backbone v1")
    return path


class Converter:
    """A real conversion (a seeded tiny Llama and SmolLM2's tokenizer) that counts its calls."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self):
        self.calls += 1
        torch.manual_seed(0)
        config = FAMILIES["llama"](len(self.tokenizer))
        config.tie_word_embeddings = True  # as SmolLM2's: the cache must store the shared matrix once and tie it again
        model = AutoModelForCausalLM.from_config(config).eval()
        return model, self.tokenizer


def never():
    raise AssertionError("the cache was not used: the source was converted again")


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad(), one_torch_thread():
        return model(ids).logits


def test_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LCIRC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "lcirc-plugins"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path("~/.cache/lcirc-plugins").expanduser()
    monkeypatch.setenv("LCIRC_CACHE_DIR", str(tmp_path / "mine"))
    assert backbones_dir() == tmp_path / "mine" / "backbones"


def test_second_load_reads_the_cache_and_matches_bit_for_bit(smollm2_tokenizer, source: Path) -> None:
    convert = Converter(smollm2_tokenizer)
    first, first_tok = cached_backbone(source, torch.float32, convert, location="tiny")
    second, second_tok = cached_backbone(source, torch.float32, never, location="tiny")
    assert convert.calls == 1
    assert torch.equal(logits(first, first_tok), logits(second, second_tok))
    assert second.lm_head.weight.data_ptr() == second.model.embed_tokens.weight.data_ptr()  # still tied
    text = "Fifteen men on the dead man's chest — yo-ho-ho, and a bottle of rum! 🏴‍☠️"
    assert second_tok(text)["input_ids"] == first_tok(text)["input_ids"]
    assert second_tok.apply_chat_template(CHAT, tokenize=False) == first_tok.apply_chat_template(CHAT, tokenize=False)
    assert second.config._name_or_path == "tiny"
    [entry] = cache_entries()
    assert entry.ok and entry.dtype == "float32" and entry.source == str(source)


def test_truncated_weights_are_rebuilt_with_a_warning(smollm2_tokenizer, source: Path) -> None:
    convert = Converter(smollm2_tokenizer)
    reference, tok = cached_backbone(source, torch.float32, convert, location="tiny")
    [entry] = list(backbones_dir().iterdir())
    weights = entry / WEIGHTS
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert not cache_entries()[0].ok
    with pytest.warns(DamagedCacheWarning, match="damaged"):
        cached_backbone(source, torch.float32, convert, location="tiny")
    assert convert.calls == 2 and cache_entries()[0].ok
    again, again_tok = cached_backbone(source, torch.float32, never, location="tiny")
    assert torch.equal(logits(reference, tok), logits(again, again_tok))
    with weights.open("r+b") as handle:  # same size, so the manifest still matches: the header must be checked
        handle.write((2**40).to_bytes(8, "little"))
    with pytest.warns(DamagedCacheWarning, match="not a safetensors header"):
        cached_backbone(source, torch.float32, convert, location="tiny")
    assert convert.calls == 3 and cache_entries()[0].ok


def test_a_changed_source_or_dtype_gets_its_own_entry(smollm2_tokenizer, source: Path) -> None:
    convert = Converter(smollm2_tokenizer)
    cached_backbone(source, torch.float32, convert, location="tiny")
    before = cache_key(cache_key_fields(source, torch.float32))
    source.write_bytes(b"GGUF tiny backbone v2")  # same size, new content
    assert cache_key(cache_key_fields(source, torch.float32)) != before
    cached_backbone(source, torch.float32, convert, location="tiny")
    assert convert.calls == 2
    model, _ = cached_backbone(source, torch.bfloat16, lambda: tuple_in(convert(), torch.bfloat16), location="tiny")
    assert model.dtype == torch.bfloat16 and convert.calls == 3
    assert {e.dtype for e in cache_entries()} == {"float32", "bfloat16"} and len(cache_entries()) == 3
    weights = {e.dtype: (backbones_dir() / e.key / WEIGHTS).stat().st_size for e in cache_entries()}
    assert weights["bfloat16"] < 0.51 * weights["float32"]  # bf16 storage halves the weights
    fields = cache_key_fields(source, torch.float32)
    assert {"source_sha256", "dtype", "torch", "transformers", "safetensors", "format_version"} <= set(fields)


def tuple_in(loaded, dtype: torch.dtype):
    model, tokenizer = loaded
    return model.to(dtype), tokenizer


def test_an_unwritable_cache_only_warns(smollm2_tokenizer, source: Path, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("LCIRC_CACHE_DIR", str(blocker))
    convert = Converter(smollm2_tokenizer)
    with pytest.warns(UserWarning, match="could not write the backbone cache"):
        model, _ = cached_backbone(source, torch.float32, convert, location="tiny")
    assert convert.calls == 1 and model is not None


def test_cache_info_and_clear_commands(smollm2_tokenizer, source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "info"]) == 0
    assert "no converted backbones" in capsys.readouterr().out
    cached_backbone(source, torch.float32, Converter(smollm2_tokenizer), location="tiny")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(backbones_dir()) in out and "float32" in out and str(source) in out and " MB" in out
    listing = "import sys\nfrom lcirc_plugins.cli import main\nmain(['cache', 'info'])\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, timeout=120, check=True)
    assert " ok " in result.stdout and result.stdout.strip().endswith("False")  # checked without importing torch
    assert main(["cache", "clear"]) == 0
    assert "freed" in capsys.readouterr().out and not cache_entries()


@pytest.mark.slow
def test_the_real_gguf_backbone_cold_then_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    cold, cold_tok = backbone_module.load_backbone("smollm2-135m-instruct")
    monkeypatch.setattr(backbone_module, "_from_pretrained", lambda *a, **k: never())  # no GGUF parsing below
    warm, warm_tok = backbone_module.load_backbone("smollm2-135m-instruct")
    assert torch.equal(logits(cold, cold_tok), logits(warm, warm_tok))
    assert warm_tok.apply_chat_template(CHAT, add_generation_prompt=True) == cold_tok.apply_chat_template(
        CHAT, add_generation_prompt=True
    )
    assert backbone_module.backbone_signature(warm, warm_tok) == backbone_module.backbone_signature(cold, cold_tok)
    assert warm.generation_config.eos_token_id == cold.generation_config.eos_token_id
