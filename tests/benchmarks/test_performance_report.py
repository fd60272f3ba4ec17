"""benchmarks/results_report.py: the issue-9 verdicts, the prefill fit and RESULTS.md come from the measurements."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import results_report
from performance import minilm_flops


def _lcirc(tokens: int, build_s: float, qd_s: float, ratio: float, rss_peak: float) -> dict:
    answer = {
        "prompt_tokens": 40,
        "new_tokens": 64,
        "peak_increase_mib": 5.0,
        "rss_before_mib": 1000.0,
        "memory": {"first_token_s": 0.3, "answer_s": 4.0 * ratio, "decode_tokens_per_s": 15.0},
        "window": {"first_token_s": 0.1, "answer_s": 4.0, "decode_tokens_per_s": 16.0},
        "ratio": ratio,
    }
    phase = {"s": build_s, "cpu_s": build_s, "peak_increase_mib": rss_peak, "rss_before_mib": 1000.0, "flops": 1e11}
    return {
        "adapter": "untrained",
        "config": {"segment_len": 512, "num_latents": 16, "perceiver_layers": 2, "gca_layers": [0, 29], "query_dependent": True},
        "rss_after_load_mib": 1000.0,
        "tokens": tokens,
        "vectors": tokens // 32,
        "build": phase,
        "qd": {**phase, "s": qd_s, "query_dependent": True},
        "answer": answer,
        "flops_context": {"full": 1e15, "lcirc": 1e12},
    }


def _report(build_1m: float, vector_1m: float, qd_128k: float, ratio: float, rss_peak: float) -> dict:
    vector = {"build": {"s": vector_1m, "peak_increase_mib": 700.0, "flops": 2e13}, "chunks": 4000}
    return {
        "environment": {
            "cpu_count": 2,
            "torch": "2.13",
            "python": "3.11",
            "loadavg_start": [1.0],
            "loadavg_end": [1.0],
            "total_s": 60.0,
        },
        "command": "python benchmarks/performance.py",
        "lcirc": {
            "131072": _lcirc(131072, 2.0, qd_128k, ratio, 30.0),
            "1000000": _lcirc(1_000_000, build_1m, 20.0, 1.8, rss_peak),
        },
        "vector": {"1000000": vector},
        "prefill": {
            "2048": {"tokens": 2048, "build": {"s": 2048e-3 + 2048**2 * 1e-7, "peak_increase_mib": 90.0, "flops": 1e12}},
            "8192": {"tokens": 8192, "build": {"s": 8192e-3 + 8192**2 * 1e-7, "peak_increase_mib": 360.0, "flops": 4e12}},
        },
    }


def test_prefill_fit_recovers_linear_and_quadratic_terms():
    a, b = results_report.prefill_fit(_report(10, 100, 1, 1, 100)["prefill"])
    assert a == pytest.approx(1e-3, rel=1e-6) and b == pytest.approx(1e-7, rel=1e-6)


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ((10.0, 100.0, 1.5, 1.2, 500.0), [True, True, True, True, True]),
        ((30.0, 100.0, 2.5, 1.6, 2500.0), [False, False, False, False, True]),
    ],
)
def test_verdicts_follow_the_measurements(numbers, expected):
    met = [v[2] for v in results_report.verdicts(_report(*numbers))]
    assert met == expected


def test_missing_measurements_are_reported_as_not_measured():
    report = _report(10, 100, 1, 1, 100)
    report["vector"] = {}
    build = results_report.verdicts(report)[0]
    assert build[1:] == ("not measured", None)


def test_results_markdown_and_plots_are_written(tmp_path: Path):
    history = tmp_path / "optimisations.jsonl"
    history.write_text(
        '{"label": "before", "lcirc": {"131072": ' + __import__("json").dumps(_lcirc(131072, 3.0, 3.0, 1.2, 30)) + "}}\n"
    )
    out = tmp_path / "RESULTS.md"
    results_report.write_report(_report(10, 100, 1.5, 1.2, 500), out, tmp_path / "figures", history, tmp_path / "none.md")
    text = out.read_text()
    assert (
        "| Memory build for a 1M-token book at least 5x faster than the vector-index build | 10.0 s vs 100.0 s: 10.0x faster | yes |"
        in text
    )
    assert "| before | 3.00 | 3.00 |" in text
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "answer_time.png",
        "build_time.png",
        "flops.png",
        "peak_rss.png",
    ]


@pytest.mark.parametrize("name", ["startup", "layer-reader-cost"])
def test_a_separately_measured_section_survives_a_new_performance_report(tmp_path: Path, name: str):
    """startup.py and layer_reader_cost.py own their sections of RESULTS.md; performance.py rewriting the rest keeps them."""
    from report_sections import read_section, write_section

    start = f"<!-- {name}:start -->"
    out = tmp_path / "RESULTS.md"
    out.write_text("# old performance report\n")
    write_section("## Measured apart\n| measured |", out, name)
    results_report.write_report(
        _report(10, 100, 1.5, 1.2, 500), out, tmp_path / "figures", tmp_path / "h.jsonl", tmp_path / "none.md"
    )
    text = out.read_text()
    assert "old performance report" not in text and text.count(start) == 1
    assert read_section(out, name) == "## Measured apart\n| measured |"
    write_section("## Measured apart\n| again |", out, name)
    assert read_section(out, name) == "## Measured apart\n| again |" and out.read_text().startswith(text.split(start)[0])


def test_minilm_flops_counts_linear_layers_and_chunked_attention():
    config = type("C", (), {"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 2})()
    per_token = 2 * (4 * 16 + 2 * 4 * 8)  # q, k, v, o and the two MLP matrices, per layer
    attention = 2 * 2 * 4 * (3 * 3 + 1 * 1)  # two chunks of 3 and 1 tokens
    assert minilm_flops(config, 4, 3) == 2 * (4 * per_token + attention)


def _layer_row(**extra) -> dict:
    phase = {"s": 100.0, "peak_increase_mib": 500.0}
    return {
        "tokens": 131072, "books": 1, "tokens_per_slot": 32, "slots": 4096, "memory_layers": 22,
        "memory_mib_float32": 198.0, "memory_mib_bfloat16": 99.0, "build": phase, "prefill_floor": phase,
        "build_over_prefill": 1.0, "question_s": 0.1, "answer_memory_s": 6.0, "answer_window_s": 4.0,
        "answer_ratio": 1.5, "torch_threads": 2, **extra,
    }


def test_layer_reader_cost_runs_take_the_adapters_own_tokens_per_slot_unless_given():
    from layer_reader_cost import parse_run

    assert parse_run("131072") == (131072, None, 1)
    assert parse_run("131072x8") == (131072, None, 8)
    assert parse_run("131072:8") == (131072, 8, 1)
    assert parse_run("131072:32x8") == (131072, 32, 8)


def test_layer_reader_cost_rows_name_the_adapter_they_timed():
    """The shipped adapter's rows and the untrained architecture's are kept apart (rows from before --adapter were untrained)."""
    from layer_reader_cost import markdown, run_key

    old = _layer_row()
    shipped = _layer_row(adapter="default", adapter_fingerprint="ab51ca45e716", whole_reader=True)
    assert run_key(old) != run_key(shipped)
    lines = markdown([old, shipped]).splitlines()
    assert lines[-1].startswith("| untrained | 22 | no | 131,072 |")
    assert lines[-2].startswith("| default (ab51ca45e716) | 22 | yes | 131,072 |") and lines[-2].endswith("(1.50x) |")


def test_layer_reader_cost_keeps_the_table_lines_of_runs_it_did_not_measure_again():
    """A fresh machine has no results file: the report's lines of other runs stay, a re-measured run's line is replaced."""
    from layer_reader_cost import line_key, markdown, run_key

    before = markdown([_layer_row(), _layer_row(tokens=1048576, books=8)]).splitlines()[-2:]
    assert [line_key(line) for line in before] == [("untrained", 131072, 1, 32), ("untrained", 1048576, 8, 32)]
    again = _layer_row(tokens=1048576, books=8, question_s=0.2, keys_values_mib=1056.0)
    assert run_key(again) == line_key(before[1])
    lines = markdown([again], earlier=before).splitlines()
    assert lines[-2] == before[0], "the run not measured again keeps its line"
    assert "| 200.0 ms |" in lines[-1] and "+ 1,056 MiB keys/values" in lines[-1] and lines[-1] != before[1]
