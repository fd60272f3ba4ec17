"""The ``lcirc`` command, run in-process through ``main`` (and once as ``python -m lcirc_plugins``).

Most tests need no model: the CLI checks its inputs before loading the backbone, which is what makes a
typo fail fast. One test loads SmolLM2 twice (compress, then ask in a "new" invocation), which also proves
that a memory written by one run is accepted by the next.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import SAMPLE_BOOK

from lcirc_plugins.cli import describe, document_metadata, main
from lcirc_plugins.data.documents import Document, text_sections
from lcirc_plugins.model.lcirc_model import DEFAULT_ADAPTER_DIR
from lcirc_plugins.model.loading import NO_ADAPTER_WARNING
from lcirc_plugins.model.memory import CompressedMemory

SUMMARY = re.compile(r"^Compressed ([\d,]+) tokens into ([\d,]+) memory vectors \((\d+\.\d)x\) in \d+\.\d s -> (.+)$")


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def small_book(tmp_path: Path, chars: int = 6_000) -> Path:
    """The start of the sample book (a few segments: enough to compress, quick to do so)."""
    text = SAMPLE_BOOK.read_text(encoding="utf-8-sig")[:chars] if SAMPLE_BOOK.is_file() else "Long John Silver. " * 400
    path = tmp_path / "treasure.txt"
    path.write_text(text, encoding="utf-8")
    return path


def tiny_memory(num_segments: int = 3, metadata: dict | None = None) -> CompressedMemory:
    """A hand-made memory (no model): 8-token segments, 2 vectors each, d=4."""
    tokens = num_segments * 8 - 3
    return CompressedMemory(
        features=torch.arange(num_segments * 2 * 4, dtype=torch.float32).reshape(-1, 4),
        token_ids=torch.arange(tokens, dtype=torch.int32),
        spans=torch.tensor([[i * 30, (i + 1) * 30] for i in range(num_segments)]),
        num_chars=num_segments * 30,
        segment_len=8,
        num_latents=2,
        adapter_fingerprint="ab" * 32,
        backbone={"model_type": "llama", "name_or_path": "smollm2-135m-instruct"},
        metadata=metadata if metadata is not None else {"title": "Treasure Island", "source": "book.txt", "sections": []},
    )


# ----- no model needed ----------------------------------------------------------------------------------


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("compress", "ask", "info", "export"):
        assert command in out
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--help"])
    assert exit_info.value.code == 0
    assert "--append" in capsys.readouterr().out


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["ask", "compress"])
def test_missing_book_is_a_clean_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str) -> None:
    book = tmp_path / "no-such-book.txt"
    argv = ["ask", book, "Who?"] if command == "ask" else ["compress", book, "-o", tmp_path / "m.memory.safetensors"]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and "no-such-book.txt" in err and "no such file" in err
    assert "Traceback" not in err and out == ""


def test_unsupported_extension_names_the_supported_ones(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    book = tmp_path / "book.docx"
    book.write_text("some text", encoding="utf-8")
    code, _, err = run(capsys, "compress", book, "-o", tmp_path / "m.memory.safetensors")
    assert code == 2
    assert err.startswith("error: ") and "unsupported file type '.docx'" in err and ".epub" in err


def test_binary_book_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    book = tmp_path / "book.txt"
    book.write_bytes(b"\x00\x01\x02binary" * 50)
    code, _, err = run(capsys, "ask", book, "What is it about?")
    assert code == 2 and "does not look like text" in err


def test_output_must_be_a_safetensors_file_in_an_existing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    book = small_book(tmp_path)
    code, _, err = run(capsys, "compress", book, "-o", tmp_path / "memory.bin")
    assert code == 2 and ".safetensors" in err
    code, _, err = run(capsys, "compress", book, "-o", tmp_path / "missing-dir" / "m.memory.safetensors")
    assert code == 2 and "missing-dir" in err and "does not exist" in err


def test_empty_question_and_bad_token_count(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    book = small_book(tmp_path)
    code, _, err = run(capsys, "ask", book, "   ")
    assert code == 2 and err == "error: the question is empty\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["ask", str(book), "Who?", "--max-new-tokens", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_missing_adapter_directory_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "ask", small_book(tmp_path), "Who?", "--adapter", tmp_path / "no-adapter")
    assert code == 2 and "no-adapter" in err and "does not exist" in err
    assert NO_ADAPTER_WARNING not in err  # an explicit adapter never falls back silently


def test_info_and_corrupt_memory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tiny_memory().save(tmp_path / "book.memory.safetensors")
    code, out, _ = run(capsys, "info", path)
    assert code == 0
    assert "Treasure Island" in out and "21 (90 characters)" in out and "6 (2 per segment, d=4)" in out
    assert "3.5x" in out and "ab" * 32 in out and "smollm2-135m-instruct" in out

    broken = tmp_path / "broken.memory.safetensors"
    broken.write_bytes(path.read_bytes()[:-10])
    code, out, err = run(capsys, "info", broken)
    assert code == 2 and err.startswith("error: ") and "broken.memory.safetensors" in err and out == ""
    code, _, err = run(capsys, "info", tmp_path / "absent.memory.safetensors")
    assert code == 2 and "does not exist" in err


def test_appended_document_becomes_a_section_at_its_offset() -> None:
    base = tiny_memory(metadata={"title": "Vol 1", "source": "v1.txt", "sections": [["Chapter 1", 0]]})
    doc = Document(text="more", title="Vol 2", source="v2.epub", sections=[("Chapter 9", 5)])
    meta = document_metadata(doc, base)
    assert meta == {"title": "Vol 1", "source": "v1.txt", "sections": [["Chapter 1", 0], ["Vol 2", 90], ["Chapter 9", 95]]}
    assert document_metadata(doc) == {"title": "Vol 2", "source": "v2.epub", "sections": [["Chapter 9", 5]]}
    assert "title:" in describe(base)


HEAVY = ("torch", "transformers", "gradio", "lcirc_plugins.model.lcirc_model")


@pytest.mark.parametrize(
    ("entry", "argv", "avoid"),
    [
        ("lcirc_plugins.cli", ["--help"], HEAVY),
        ("lcirc_plugins.cli", ["cache", "info"], HEAVY),
        ("lcirc_plugins.app.__main__", ["--help"], HEAVY),
        ("lcirc_plugins.cli", ["info", "MEMORY"], HEAVY[1:]),  # reading a memory needs torch, not the model
    ],
)
def test_light_commands_import_no_heavy_modules(tmp_path: Path, entry: str, argv: list[str], avoid: tuple[str, ...]) -> None:
    memory = tiny_memory().save(tmp_path / "book.memory.safetensors")
    argv = [str(memory) if a == "MEMORY" else a for a in argv]
    code = (
        "import sys, contextlib, io\n"
        f"from {entry} import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
        f"print([m for m in {list(avoid)!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_module_entry_point_exits_2_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lcirc_plugins", "ask", str(tmp_path / "missing.md"), "Who?"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "missing.md" in result.stderr
    assert "Traceback" not in result.stderr


# ----- with the real backbone ---------------------------------------------------------------------------


@pytest.mark.integration
def test_compress_info_then_ask_the_saved_memory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    book = small_book(tmp_path)
    memory_path = tmp_path / "treasure.memory.safetensors"

    code, out, err = run(capsys, "compress", book, "-o", memory_path)
    assert code == 0, err
    match = SUMMARY.match(out.strip().splitlines()[-1])
    assert match, out
    assert match.group(4) == str(memory_path) and memory_path.is_file()
    untrained = not DEFAULT_ADAPTER_DIR.is_dir()
    assert_status_first(out, untrained)
    assert NO_ADAPTER_WARNING not in err  # said plainly on stdout instead of as a warning
    memory = CompressedMemory.load(memory_path)
    assert f"{memory.num_tokens:,}" == match.group(1) and f"{memory.num_vectors:,}" == match.group(2)
    assert memory.metadata["title"] == "treasure" and memory.metadata["source"] == str(book)
    text = book.read_text(encoding="utf-8")
    assert memory.metadata["sections"] == [[t, o] for t, o in text_sections(text)] and memory.metadata["sections"]

    code, out, _ = run(capsys, "info", memory_path)
    assert code == 0 and "treasure" in out and f"{memory.num_tokens:,}" in out and memory.adapter_fingerprint in out
    assert f"sections:  {len(text_sections(text))}" in out
    assert ("untrained fallback (untrained: gates closed)" in out) == untrained

    # A separate invocation loads the model again (from the converted-backbone cache now): it must accept
    # the memory the first one wrote.
    code, out, err = run(capsys, "ask", memory_path, "Who is the captain?", "--max-new-tokens", "8")
    assert code == 0, err
    assert out.endswith("\n") and out.strip()
    assert_status_first(out, untrained)
    assert "error" not in err


def assert_status_first(out: str, untrained: bool) -> None:
    """The model's status comes before anything else: backbone, adapter, and the untrained notice if so."""
    lines = out.splitlines()
    assert lines[0] == "backbone: smollm2-135m-instruct", out
    assert lines[1].startswith("adapter:  ") and ("untrained" in lines[1]) == untrained
    assert ("do not use the book" in out.split("\n\n")[0]) == untrained


@pytest.mark.slow
@pytest.mark.integration
def test_ask_a_book_directly_and_append(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    book = small_book(tmp_path, chars=3_000)
    code, out, err = run(capsys, "ask", book, "Who is the captain?", "--max-new-tokens", "8", "--no-stream")
    assert code == 0, err
    assert out.strip()

    memory_path = tmp_path / "a.memory.safetensors"
    assert run(capsys, "compress", book, "-o", memory_path)[0] == 0
    first = CompressedMemory.load(memory_path)
    code, out, err = run(capsys, "compress", book, "-o", memory_path, "--append", memory_path)
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("Appended ")
    both = CompressedMemory.load(memory_path)
    assert both.num_chars == 2 * first.num_chars
    own = [[t, o + first.num_chars] for t, o in first.metadata["sections"]]
    assert both.metadata["sections"] == first.metadata["sections"] + [["treasure", first.num_chars]] + own


@pytest.mark.integration
def test_export_writes_a_bf16_adapter_that_loads_back(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open

    from lcirc_plugins import LCIRCConfig, LCIRCModel

    torch.manual_seed(0)
    source = LCIRCModel.from_backbone("smollm2-135m-instruct", LCIRCConfig(num_latents=4, gca_layers=[0, 29], gate_init=0.3))
    source.save_pretrained(tmp_path / "fp32")
    source.injector.detach()
    code, out, err = run(capsys, "export", tmp_path / "fp32", "-o", tmp_path / "bf16")
    assert code == 0, err
    assert "bfloat16" in out
    with safe_open(str(tmp_path / "bf16" / "adapter_model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.bfloat16}  # noqa: SIM118 (safe_open is not a dict)
    half = (tmp_path / "bf16" / "adapter_model.safetensors").stat().st_size
    assert half < 0.55 * (tmp_path / "fp32" / "adapter_model.safetensors").stat().st_size
    loaded = LCIRCModel.from_pretrained(tmp_path / "bf16")
    expected = {k: v.to(torch.bfloat16).float() for k, v in source.adapter.state_dict().items()}
    assert all(torch.equal(v, expected[k]) for k, v in loaded.adapter.state_dict().items())
    assert f"fingerprint {loaded.adapter_fingerprint[:12]}" in out, "the printed fingerprint is the one the export loads with"
    loaded.injector.detach()


@pytest.mark.integration
def test_export_gives_every_head_the_memory_sink_chosen(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--memory-sink`` grows a sink on an adapter that has none and replaces the values of one that has; the
    other weights are exported as they were."""
    import torch

    from lcirc_plugins import LCIRCConfig, LCIRCModel

    torch.manual_seed(0)
    config = LCIRCConfig(reader="layer", lora_rank=4, tokens_per_slot=4, gca_layers=[0, 29], gate_init=0.3)
    source = LCIRCModel.from_backbone("smollm2-135m-instruct", config)
    source.save_pretrained(tmp_path / "plain")
    source.injector.detach()
    for start, logit, out_dir in (("plain", "8", "sink8"), ("sink8", "6.5", "sink6")):
        code, _, err = run(capsys, "export", tmp_path / start, "-o", tmp_path / out_dir, "--memory-sink", logit, "--dtype", "float32")
        assert code == 0, err
        loaded = LCIRCModel.from_pretrained(tmp_path / out_dir)
        weights = loaded.adapter.state_dict()
        sinks = {k: v for k, v in weights.items() if k.endswith("attn_sink")}
        assert len(sinks) == 2 and all(torch.all(v == float(logit)) for v in sinks.values())
        assert all(torch.equal(v, weights[k]) for k, v in source.adapter.state_dict().items())
        assert loaded.config.memory_sink == float(logit)
        loaded.injector.detach()


@pytest.mark.integration
def test_export_sets_whole_near_prompt_and_keeps_the_weights(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--whole-near-prompt`` is how the shipped adapter gets the flag it was measured with; an adapter without
    whole readers is refused with the reason, and nothing is written."""
    import torch

    from lcirc_plugins import LCIRCConfig, LCIRCModel

    torch.manual_seed(0)
    base = {"reader": "layer", "lora_rank": 2, "tokens_per_slot": 4, "gca_layers": [0, 29], "gate_init": 0.3}
    fingerprints = {}
    for name, extra in (("whole", {"whole_reader": True, "whole_segments": 1}), ("slots", {})):
        model = LCIRCModel.from_backbone("smollm2-135m-instruct", LCIRCConfig(**base, **extra))
        model.save_pretrained(tmp_path / name)
        model.injector.detach()
        fingerprints[name] = model.adapter_fingerprint
    for flag, expected in (("--whole-near-prompt", True), ("--no-whole-near-prompt", False)):
        code, _, err = run(capsys, "export", tmp_path / "whole", "-o", tmp_path / f"out{expected}", flag, "--dtype", "float32")
        assert code == 0, err
        loaded = LCIRCModel.from_pretrained(tmp_path / f"out{expected}")
        assert loaded.config.whole_near_prompt is expected
        assert loaded.adapter_fingerprint == fingerprints["whole"]
        loaded.injector.detach()
    code, _, err = run(capsys, "export", tmp_path / "slots", "-o", tmp_path / "refused", "--whole-near-prompt")
    assert code != 0 and "whole_reader" in err
    assert not (tmp_path / "refused").exists()


@pytest.mark.integration
def test_graft_gives_an_adapter_another_adapter_s_readers_as_whole_readers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    from lcirc_plugins import LCIRCConfig, LCIRCModel

    config = {"reader": "layer", "lora_rank": 2, "gate_init": 0.3, "query_dependent": True}
    for seed, name, layers in ((0, "slots", [3, 29]), (1, "whole", [3, 29]), (2, "elsewhere", [3, 28])):
        torch.manual_seed(seed)
        model = LCIRCModel.from_backbone("smollm2-135m-instruct", LCIRCConfig(**config, gca_layers=layers))
        with torch.no_grad():
            for param in model.adapter.parameters():
                param.normal_(std=0.02)
        model.save_pretrained(tmp_path / name)
        model.injector.detach()
    code, out, err = run(capsys, "graft", tmp_path / "slots", "--whole-from", tmp_path / "whole", "-o", tmp_path / "both")
    assert code == 0, err
    assert "joint softmax" in out
    both, slots, whole = (LCIRCModel.from_pretrained(tmp_path / name) for name in ("both", "slots", "whole"))
    assert (both.config.whole_reader, both.config.whole_segments, both.config.whole_softmax) == (True, 2, "joint")
    for index, block in both.adapter.gca.items():
        assert torch.equal(block.attn_gate, slots.adapter.gca[index].attn_gate)
        assert torch.equal(block.whole.attn_gate, whole.adapter.gca[index].attn_gate)
        assert torch.equal(block.whole.lora["v"].up.weight, whole.adapter.gca[index].lora["v"].up.weight)
    assert torch.equal(both.adapter.compressor.query_mixer.attn_gate, slots.adapter.compressor.query_mixer.attn_gate)
    for model in (both, slots, whole):
        model.injector.detach()
    code, _, err = run(capsys, "graft", tmp_path / "slots", "--whole-from", tmp_path / "elsewhere", "-o", tmp_path / "never")
    assert code == 2 and "reads layers" in err
    assert not (tmp_path / "never").exists()
