"""The QA benchmark task end to end on a tiny model for each benchmark format, its report, and the CLI."""

from __future__ import annotations

import json
from itertools import product

import pytest
from support import FIXTURES, one_torch_thread

from lcirc_plugins.errors import CorruptFileError
from lcirc_plugins.eval.__main__ import main, parse_args
from lcirc_plugins.eval.datasets import load_benchmark, score

BENCHMARK_FILES = FIXTURES / "benchmarks"
from lcirc_plugins.eval.report import qa_summary, write_report
from lcirc_plugins.eval.systems import BM25RAG, FullContext, LCIRCSystem, TruncatedBackbone
from lcirc_plugins.eval.tasks import qa_benchmark

CASES = {
    "longbench": "longbench.jsonl",
    "infinitebench": "infinitebench/longbook_choice_eng.jsonl",
    "leval": "leval/quality.jsonl",
}


@pytest.mark.parametrize(("fmt", "name"), CASES.items())
def test_qa_benchmark_end_to_end(make_lcirc, fmt, name):
    model = make_lcirc("llama", gate_init=0.5)
    systems = [TruncatedBackbone(model), LCIRCSystem(model), BM25RAG(model, chunk_tokens=64)]
    records = load_benchmark(BENCHMARK_FILES / name, fmt)
    with one_torch_thread():
        rows = qa_benchmark(systems, records, max_new_tokens=4)
    assert len(rows) == len(records) * len(systems)
    for row, (record, system) in zip(rows, product(records, systems)):
        assert (row["task"], row["benchmark"], row["dataset"], row["id"]) == ("qa", fmt, record.dataset, record.id)
        assert row["system"] == system.name and row["metric"] == record.metric and row["skipped"] is None
        assert row["max_new_tokens"] == min(4, record.max_new_tokens)
        assert isinstance(row["prediction"], str)
        assert row["score"] == pytest.approx(score(record, row["prediction"]), abs=1e-6) and 0 <= row["score"] <= 1
        assert row["flops"] == system.flops(row["length"]) > 0
        assert row["wall_time_s"] > 0 and row["peak_rss_mb"] > 0 and row["answers"] == list(record.answers)


class FixedAnswer:
    """A system that always gives the same answer. The random tiny model scores 0 on every record, so this is
    what shows that the task scores what a system says."""

    name = "fixed"

    def __init__(self, text: str) -> None:
        self.text = text

    def nll(self, context_ids: object, target_ids: object) -> float:
        raise NotImplementedError

    def answer(self, context_text: str, question: str, max_new_tokens: int = 32) -> str:
        return self.text

    def flops(self, context_tokens: int) -> int:
        return context_tokens


def test_the_task_scores_what_the_system_answers(smollm2_tokenizer):
    records = load_benchmark(BENCHMARK_FILES / "infinitebench" / "longbook_choice_eng.jsonl")
    rows = qa_benchmark([FixedAnswer("B")], records, tokenizer=smollm2_tokenizer)
    assert [r["score"] for r in rows] == [1.0, 0.0]  # B is "Red" (right), not "The doctor from Wendel" (C)
    assert [r["max_new_tokens"] for r in rows] == [40, 40]  # InfiniteBench's own budget when nothing caps it
    assert rows[0]["prediction"] == "B" and rows[0]["flops"] == rows[0]["length"]


def test_long_leval_document_goes_through_lcirc_memory(make_lcirc, smollm2_tokenizer):
    """The L-Eval fixture's document is longer than the tiny model's window, so LCIRC compresses its head."""
    model = make_lcirc("llama", gate_init=0.5)
    (record, *_) = load_benchmark(BENCHMARK_FILES / "leval" / "quality.jsonl")
    with one_torch_thread():
        (lcirc, truncated) = qa_benchmark([LCIRCSystem(model), TruncatedBackbone(model)], [record], max_new_tokens=4)
    assert lcirc["length"] > model.config.window
    assert lcirc["flops"] > truncated["flops"]  # the compressor's work is counted


def test_skipped_records_and_the_qa_report(make_lcirc, tmp_path):
    model = make_lcirc("llama")
    full = FullContext(model)
    with pytest.warns(UserWarning, match="skipped 1 line"):
        records = load_benchmark(BENCHMARK_FILES / "leval" / "financial_qa.jsonl")
    model.backbone.config.max_position_embeddings = 60  # the fixture's prompts need about 90 tokens
    try:
        with one_torch_thread():
            rows = qa_benchmark([TruncatedBackbone(model), full], records, max_new_tokens=3)
    finally:
        model.backbone.config.max_position_embeddings = 2048
    skipped = [r for r in rows if r["system"] == "full"]
    assert all(r["score"] is None and "60 positions" in r["skipped"] for r in skipped)

    paths = write_report(rows, tmp_path, "qa", meta={"seed": 0})
    loaded = json.loads(paths["json"].read_text())
    assert loaded["rows"] == rows
    summary = {s["system"]: s for s in loaded["qa_summary"]}
    answered = [r["score"] for r in rows if r["system"] == "truncated"]
    assert summary["truncated"]["score"] == pytest.approx(sum(answered) / 2, abs=1e-4) and summary["truncated"]["n"] == 2
    assert summary["full"]["skipped"] == 2 and summary["full"]["score"] is None
    table = paths["md"].read_text()
    assert "## QA benchmarks" in table and "| leval | financial_qa | qa_f1 | truncated | 2 | 0 |" in table
    assert "| task |" not in table  # per-record rows stay in the JSON
    assert paths["qa_leval_financial_qa"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_qa_summary_means_by_hand():
    base = {"task": "qa", "benchmark": "b", "dataset": "d", "metric": "qa_f1", "flops": 10, "length": 5, "peak_rss_mb": 1.0}
    rows = [
        {**base, "system": "s", "score": 1.0, "wall_time_s": 2.0, "tokens_per_s": 4.0},
        {**base, "system": "s", "score": 0.5, "wall_time_s": 4.0, "tokens_per_s": 2.0, "peak_rss_mb": 3.0},
        {**base, "system": "s", "score": None, "wall_time_s": None, "tokens_per_s": None},
        {**base, "system": "t", "score": 0.0, "wall_time_s": 1.0, "tokens_per_s": 1.0},
        {"task": "perplexity", "system": "s", "length": 5},
    ]
    s, t = qa_summary(rows)
    assert (s["system"], s["n"], s["skipped"], s["score"], s["wall_time_s"], s["tokens_per_s"], s["peak_rss_mb"]) == (
        "s",
        3,
        1,
        0.75,
        3.0,
        3.0,
        3.0,
    )
    assert (t["system"], t["n"], t["score"]) == ("t", 1, 0.0)


def test_cli_qa_arguments():
    args = parse_args(["--qa", "a.jsonl", "b.jsonl", "--qa-format", "leval", "--qa-limit", "5", "--qa-dataset", "tpo"])
    assert args.qa == ["a.jsonl", "b.jsonl"] and args.qa_format == "leval" and args.qa_limit == 5 and args.qa_dataset == "tpo"
    assert args.book is None and args.qa_max_new_tokens == 64
    with pytest.raises(SystemExit):
        parse_args(["--systems", "truncated"])  # neither --book nor --qa


def test_cli_rejects_a_bad_file_before_loading_any_model(tmp_path):
    bad = tmp_path / "hotpotqa.jsonl"
    bad.write_text('{"input": "q",\n', encoding="utf-8")
    with pytest.raises(CorruptFileError, match="line 1 is not valid JSON"):
        main(["--qa", str(bad), "--out", str(tmp_path / "out")])


def test_cli_qa_end_to_end_on_a_tiny_backbone(tiny_backbones, smollm2_tokenizer, tmp_path):
    folder = tmp_path / "tiny-llama"
    tiny_backbones["llama"].save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    argv = [
        "--backbone",
        str(folder),
        "--qa",
        str(BENCHMARK_FILES / "longbench.jsonl"),
        str(BENCHMARK_FILES / "infinitebench" / "passkey.jsonl"),
        "--qa-limit",
        "2",
        "--qa-max-new-tokens",
        "3",
        "--systems",
        "truncated",
        "lcirc",
        "--out",
        str(out),
    ]
    with one_torch_thread():
        assert main(argv) == 0
    report = json.loads((out / "eval.json").read_text())
    rows = report["rows"]
    assert [(r["benchmark"], r["dataset"]) for r in rows[::2]] == [
        ("longbench", "hotpotqa"),
        ("longbench", "gov_report"),
        ("infinitebench", "passkey"),
        ("infinitebench", "passkey"),
    ]
    assert {r["system"] for r in rows} == {"truncated", "lcirc"} and all(r["score"] is not None for r in rows)
    assert report["meta"]["qa_limit"] == 2 and len(report["qa_summary"]) == 3 * 2
    assert (out / "eval-qa-infinitebench-passkey.png").is_file() and "## QA benchmarks" in (out / "eval.md").read_text()
