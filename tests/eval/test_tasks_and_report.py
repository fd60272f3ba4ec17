"""Perplexity-by-length and needle grids on a tiny model, the report files, reproducibility, the CLI parser."""

from __future__ import annotations

import json
import math

import pytest
from support import default_adapter_loading, one_torch_thread

from lcirc_plugins.eval.__main__ import parse_args
from lcirc_plugins.eval.report import markdown_table, write_report
from lcirc_plugins.eval.systems import BM25RAG, FullContext, LCIRCSystem, TruncatedBackbone
from lcirc_plugins.eval.tasks import TIMING_FIELDS, needle_grid, perplexity_by_length, strip_timing


@pytest.fixture
def systems(make_lcirc):
    model = make_lcirc("llama", gate_init=0.5)
    return [TruncatedBackbone(model), FullContext(model), LCIRCSystem(model), BM25RAG(model, chunk_tokens=64)]


def _run(systems, sample_text, seed):
    with one_torch_thread():
        rows = perplexity_by_length(systems, sample_text, [300, 600], target_len=32, seed=seed)
        rows += needle_grid(systems[:1] + systems[3:], [300, 500], [0.0, 1.0], seed=seed, haystack=sample_text, max_new_tokens=4)
    return rows


def test_rows_report_and_reproducibility(systems, sample_text, tmp_path):
    rows = _run(systems, sample_text, seed=1)
    ppl = [r for r in rows if r["task"] == "perplexity"]
    assert {(r["system"], r["length"]) for r in ppl} == {(s.name, n) for s in systems for n in (300, 600)}
    assert all(math.isfinite(r["perplexity"]) and r["flops"] > 0 and r["wall_time_s"] > 0 and r["peak_rss_mb"] > 0 for r in ppl)
    by = {(r["system"], r["length"]): r for r in ppl}
    assert by[("truncated", 600)]["flops"] == by[("truncated", 300)]["flops"]  # window-bound
    assert by[("full", 600)]["flops"] > 2 * by[("full", 300)]["flops"] / 1.1
    needles = [r for r in rows if r["task"] == "passkey"]
    assert len(needles) == 2 * 2 * 2 and all(r["accuracy"] in (0.0, 1.0) and isinstance(r["prediction"], str) for r in needles)

    # same seed -> same rows except timing; another seed -> other pieces
    again = _run(systems, sample_text, seed=1)
    assert strip_timing(again) == strip_timing(rows)
    assert any(rows[i][f] is not None for i in range(len(rows)) for f in TIMING_FIELDS)
    other = perplexity_by_length(systems[:1], sample_text, [300], target_len=32, seed=2)
    assert other[0]["nll"] != by[("truncated", 300)]["nll"]

    paths = write_report(rows, tmp_path, "tiny", meta={"seed": 1})
    for key in ("json", "md", "perplexity_png", "cost_png", "heatmap_passkey_truncated", "heatmap_passkey_bm25-rag"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    assert paths["perplexity_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = json.loads(paths["json"].read_text())
    assert loaded["rows"] == rows and loaded["meta"] == {"seed": 1}
    table = paths["md"].read_text()
    assert table.count("\n| perplexity | truncated |") == 2 and "bm25-rag" in table


def test_skipped_rows_are_recorded(make_lcirc, sample_text):
    system = FullContext(make_lcirc("llama"))
    system.model.backbone.config.max_position_embeddings = 400
    try:
        rows = perplexity_by_length([system], sample_text, [300, 500], target_len=32, seed=0)
    finally:
        system.model.backbone.config.max_position_embeddings = 2048
    assert rows[0]["nll"] is not None and rows[1]["nll"] is None and "400 positions" in rows[1]["skipped"]
    assert "| - |" in markdown_table(rows)


def test_cli_arguments():
    args = parse_args(
        [
            "--book",
            "b.txt",
            "--lengths",
            "8192",
            "32768",
            "--depths",
            "0",
            "0.5",
            "--systems",
            "truncated",
            "lcirc",
            "--seed",
            "3",
        ]
    )
    assert (
        args.lengths == [8192, 32768] and args.depths == [0.0, 0.5] and args.systems == ["truncated", "lcirc"] and args.seed == 3
    )
    assert args.out == "eval-out" and args.adapter is None


@pytest.mark.slow
def test_cli_end_to_end_on_smollm2(tmp_path):
    """The whole command on the real SmolLM2-135M with a fresh adapter, at small lengths (about 2.5 minutes on a 2-core CPU)."""
    from support import SAMPLE_BOOK

    from lcirc_plugins.eval.__main__ import main

    out = tmp_path / "out"
    argv = [
        "--book",
        str(SAMPLE_BOOK),
        "--lengths",
        "1536",
        "3072",
        "--depths",
        "0.2",
        "0.8",
        "--systems",
        "truncated",
        "full",
        "bm25-rag",
        "lcirc",
        "qd-lcirc",
        "--out",
        str(out),
        "--target-len",
        "64",
        "--max-new-tokens",
        "12",
    ]
    assert main(argv) == 0
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert {r["system"] for r in rows} == {"truncated", "full", "bm25-rag", "lcirc", "qd-lcirc"}
    ppl = {(r["system"], r["length"]): r["perplexity"] for r in rows if r["task"] == "perplexity"}
    # an untrained adapter has closed gates: LCIRC scores exactly as the truncated backbone
    assert ppl[("lcirc", 3072)] == pytest.approx(ppl[("truncated", 3072)], rel=1e-4)
    assert (out / "eval-perplexity.png").is_file() and (out / "eval-passkey-lcirc.png").is_file()


def test_lcirc_eval_loads_adapters_by_the_package_rule(tmp_path):
    """`lcirc-eval --adapter default` falls back to the untrained adapter; a named adapter that is missing is an error."""
    from lcirc_plugins import LCIRCModel
    from lcirc_plugins.errors import AdapterNotFoundError
    from lcirc_plugins.eval.__main__ import _load

    with default_adapter_loading():
        assert isinstance(_load("default", None), LCIRCModel)
    with pytest.raises(AdapterNotFoundError):
        _load(str(tmp_path / "no-such-adapter"), None)


def test_needle_sweeps_take_their_tasks_from_the_registry(systems, sample_text):
    with pytest.raises(ValueError, match="unknown needle task 'book_facts'; use one of 'passkey', 'niah_single'"):
        needle_grid(systems[:1], [300], [0.5], task="book_facts", haystack=sample_text)
    with pytest.raises(ValueError, match="niah_single needs a haystack"):
        needle_grid(systems[:1], [300], [0.5], task="niah_single")
    with one_torch_thread():
        rows = needle_grid(systems[:1], [300], [0.5], task="niah_single", haystack=sample_text, max_new_tokens=4)
    assert [r["task"] for r in rows] == ["niah_single"] and rows[0]["answer"].isdigit(), rows
