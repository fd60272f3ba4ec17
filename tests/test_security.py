"""Security: nothing is unpickled, no repository code runs by default, the app listens on localhost only,
and uploads cannot write outside the app's data folder.

The pickle tests plant payloads that would create a marker file if any loader ran them, in every place a
model file is read: adapter weights, a compressed memory and a backbone folder (the training checkpoint's
``optimizer.pt`` is covered in ``test_fault_injection.py``).
"""

from __future__ import annotations

import ast
import inspect
import json
import pickle
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support import SAMPLE_BOOK, RunsCodeWhenUnpickled

import lcirc_plugins
from lcirc_plugins import CompressedMemory, LCIRCModel
from lcirc_plugins.errors import BackboneNotFoundError, CorruptFileError, UnsupportedBackboneError

PACKAGE = Path(lcirc_plugins.__file__).parent


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can unpickle: torch.load without weights_only=True, pickle/dill/joblib loads, numpy allow_pickle."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if name.endswith("torch.load") and keywords.get("weights_only") != "True":
            found.append(f"{name}(...) without weights_only=True at line {node.lineno}")
        if name.split(".")[0] in ("pickle", "dill", "joblib", "cloudpickle", "marshal") and name.split(".")[-1] in (
            "load",
            "loads",
        ):
            found.append(f"{name}(...) at line {node.lineno}")
        if keywords.get("allow_pickle") == "True" or keywords.get("trust_remote_code") == "True":
            found.append(f"{name}(..., {ast.unparse(node)}) at line {node.lineno}")
    return found


def test_the_scanner_finds_unsafe_loads():
    source = (
        "import torch, pickle\ntorch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\nnp.load(p, allow_pickle=True)"
    )
    assert len(_unsafe_loads(ast.parse(source))) == 4
    assert _unsafe_loads(ast.parse("torch.load(p, weights_only=True)")) == []


def test_no_module_of_the_package_can_unpickle_or_turn_on_remote_code():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = _unsafe_loads(ast.parse(path.read_text(encoding="utf-8")))
        if found:
            offenders[str(path.relative_to(PACKAGE))] = found
    assert offenders == {}


def _pickle_file(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"weights": RunsCodeWhenUnpickled(marker)}))
    return path


def test_a_pickle_saved_as_adapter_weights_is_refused_unread(make_lcirc, tiny_backbones, smollm2_tokenizer, tmp_path):
    make_lcirc("llama").save_pretrained(tmp_path / "adapter")
    _pickle_file(tmp_path / "adapter" / "adapter_model.safetensors", tmp_path / "RAN")
    with pytest.raises(CorruptFileError, match="not a readable safetensors file"):
        LCIRCModel.from_pretrained(tmp_path / "adapter", tiny_backbones["llama"], tokenizer=smollm2_tokenizer)
    assert not (tmp_path / "RAN").exists()


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickle_saved_as_a_memory_is_refused_unread(tmp_path, writer):
    path = tmp_path / "book.memory.safetensors"
    if writer == "pickle":
        _pickle_file(path, tmp_path / "RAN")
    else:
        torch.save({"features": RunsCodeWhenUnpickled(tmp_path / "RAN")}, path)
    with pytest.raises(CorruptFileError, match="not a readable safetensors memory file"):
        CompressedMemory.load(path)
    assert not (tmp_path / "RAN").exists()


@pytest.fixture
def backbone_folder(tiny_backbones, smollm2_tokenizer, tmp_path) -> Path:
    folder = tmp_path / "tiny-llama"
    tiny_backbones["llama"].save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def test_a_backbone_with_only_pickled_weights_is_refused_unread(backbone_folder, tmp_path):
    from lcirc_plugins.model.backbone import load_backbone

    (backbone_folder / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": RunsCodeWhenUnpickled(tmp_path / "RAN")}, backbone_folder / "pytorch_model.bin")
    with pytest.raises(BackboneNotFoundError, match="no file named model.safetensors"):
        load_backbone(str(backbone_folder))
    assert not (tmp_path / "RAN").exists()


def test_repository_code_never_runs_unless_trust_remote_code_is_turned_on(backbone_folder, tmp_path):

    marker = tmp_path / "RAN"
    (backbone_folder / "custom_model.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom transformers import LlamaConfig\n\n\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'lcirc-custom-test'\n"
    )
    config = json.loads((backbone_folder / "config.json").read_text())
    config.update(model_type="lcirc-custom-test", auto_map={"AutoConfig": "custom_model.CustomConfig"})
    (backbone_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedBackboneError, match="trust_remote_code=True"):
        LCIRCModel.from_backbone(str(backbone_folder))
    assert not marker.exists()


def test_trust_remote_code_is_off_by_default_everywhere_it_can_be_set():
    from lcirc_plugins import cli
    from lcirc_plugins.model import backbone, loading

    functions = [backbone.load_backbone, LCIRCModel.from_backbone, LCIRCModel.from_pretrained, loading.load_model, cli.load_model]
    defaults = {f.__qualname__: inspect.signature(f).parameters["trust_remote_code"].default for f in functions}
    assert set(defaults.values()) == {False}, defaults
    for command in (["compress", "book.txt", "-o", "m.safetensors"], ["ask", "book.txt", "Who?"]):
        assert cli.build_parser().parse_args(command).trust_remote_code is False


def test_the_app_listens_on_localhost_unless_told_otherwise():
    from lcirc_plugins.app.__main__ import parser

    assert parser().parse_args([]).host == "127.0.0.1"
    pytest.importorskip("gradio")
    from lcirc_plugins.app.ui import launch

    assert inspect.signature(launch).parameters["host"].default == "127.0.0.1"


# ----- uploads ------------------------------------------------------------------------------------------

NAMES = st.one_of(
    st.text(min_size=0, max_size=300),
    st.lists(
        st.sampled_from(["..", ".", "/", "\\", "~", "etc", "passwd", ".txt", "\x00", "C:", "%2e%2e", "ﾟ", " "]), max_size=20
    ).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(NAMES)
def test_sanitized_upload_names_stay_inside_the_upload_folder(name):
    from lcirc_plugins.app.library import sanitize_filename

    safe = sanitize_filename(name)
    folder = Path("/srv/lcirc/uploads")
    assert safe and len(safe) <= 80 and not safe.startswith(".")
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert (folder / safe).resolve().parent == folder


def test_an_upload_named_to_escape_is_stored_inside_the_data_folder(make_lcirc, tmp_path):
    from lcirc_plugins.app import handlers

    uploads = tmp_path / "gradio-tmp"
    uploads.mkdir()
    evil = uploads / "..\\..\\..\\escaped.txt"  # a legal file name on Linux; on Windows, a path
    evil.write_text(SAMPLE_BOOK.read_text(encoding="utf-8-sig")[:3000], encoding="utf-8")
    data = tmp_path / "data"
    ctx = handlers.AppContext.create(make_lcirc("llama"), data)
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(data)}
    result = handlers.add_books(ctx, None, [str(evil)])
    assert result.added, result.status
    assert {p for p in tmp_path.rglob("*") if not p.is_relative_to(data)} == before, "nothing written outside data_dir"
    stored = [p.name for p in ctx.library.upload_dir.iterdir()]
    assert len(stored) == 1 and stored[0].endswith("-escaped.txt")
