"""``benchmarks/RESULTS.md`` and its plots from the JSON that ``performance.py`` writes.

Everything printed here is read from the measurements; the only computed numbers are ratios, the
least-squares fit of the full-attention prefill (``t = a N + b N^2``) and the issue-9 verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from report_sections import SECTIONS, read_section, write_section

TARGETS = {
    "build": "Memory build for a 1M-token book at least 5x faster than the vector-index build",
    "qd": "QD recompression of a 128K-token book under 2 s",
    "answer": "Answering with a 128K-token memory costs at most 1.5x answering from the window alone",
    "rss": "Peak RSS for a 1M-token book under 2 GB beyond the loaded backbone",
    "flops": "FLOPs at 128K at least 99% below full attention",
}


def _rows(section: dict[Any, dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return sorted(((int(n), r) for n, r in section.items()), key=lambda item: item[0])


def _ok(r: dict[str, Any] | None) -> bool:
    return bool(r) and "error" not in r


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1024}K"


def prefill_fit(prefill: dict[Any, dict[str, Any]]) -> tuple[float, float] | None:
    """Least-squares ``(a, b)`` of ``t = a N + b N^2`` over the measured full-attention prefills."""
    points = [(r["tokens"], r["build"]["s"]) for _, r in _rows(prefill) if _ok(r)]
    if len(points) < 2:
        return None
    n = np.array([p[0] for p in points], dtype=float)
    t = np.array([p[1] for p in points], dtype=float)
    (a, b), *_ = np.linalg.lstsq(np.stack([n, n * n], axis=1), t, rcond=None)
    return float(a), float(b)


def beyond_backbone_mib(r: dict[str, Any]) -> float:
    """Highest RSS any phase reached, minus the RSS after loading the model (backbone + adapter)."""
    peaks = [r[k]["rss_before_mib"] + r[k]["peak_increase_mib"] for k in ("build", "qd", "answer") if k in r]
    return max(peaks) - r["rss_after_load_mib"]


def verdicts(report: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each issue-9 target; met is None when it was not measured.

    Sizes are string keys, as in the JSON (``write_report`` round-trips the report through it).
    """
    lcirc, vector = report["lcirc"], report["vector"]
    big, mid, vbig = lcirc.get("1000000"), lcirc.get("131072"), vector.get("1000000")
    out: list[tuple[str, str, bool | None]] = []
    if _ok(big) and _ok(vbig):
        ratio = vbig["build"]["s"] / big["build"]["s"]
        out.append(
            (TARGETS["build"], f"{big['build']['s']:.1f} s vs {vbig['build']['s']:.1f} s: {ratio:.1f}x faster", ratio >= 5)
        )
    else:
        out.append((TARGETS["build"], "not measured", None))
    if _ok(mid) and mid["qd"]["query_dependent"]:
        out.append((TARGETS["qd"], f"{mid['qd']['s']:.2f} s", mid["qd"]["s"] < 2))
    else:
        out.append((TARGETS["qd"], "not measured", None))
    if _ok(mid) and "answer" in mid:
        a = mid["answer"]
        text = (
            f"{a['memory']['answer_s']:.2f} s vs {a['window']['answer_s']:.2f} s for {a['new_tokens']} tokens: {a['ratio']:.2f}x"
        )
        out.append((TARGETS["answer"], text, a["ratio"] <= 1.5))
    else:
        out.append((TARGETS["answer"], "not measured", None))
    if _ok(big):
        mib = beyond_backbone_mib(big)
        out.append((TARGETS["rss"], f"{mib:,.0f} MiB", mib < 2048))
    else:
        out.append((TARGETS["rss"], "not measured", None))
    if _ok(mid):
        f = mid["flops_context"]
        saving = 1 - f["lcirc"] / f["full"]
        out.append((TARGETS["flops"], f"{f['lcirc']:.2e} vs {f['full']:.2e}: {100 * saving:.2f}% below", saving >= 0.99))
    else:
        out.append((TARGETS["flops"], "not measured", None))
    return out


def _plot(path: Path, title: str, ylabel: str, series: dict[str, tuple[list[int], list[float], str]], log_y: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (xs, ys, style) in series.items():
        if xs:
            ax.plot(xs, ys, style, label=label)
    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("book length (backbone tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures(report: dict[str, Any], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    lcirc = [(n, r) for n, r in _rows(report["lcirc"]) if _ok(r)]
    vector = [(n, r) for n, r in _rows(report["vector"]) if _ok(r)]
    prefill = [(n, r) for n, r in _rows(report["prefill"]) if _ok(r)]
    fit = prefill_fit(report["prefill"])
    names = []

    series = {
        "LCIRC memory build": ([n for n, _ in lcirc], [r["build"]["s"] for _, r in lcirc], "o-"),
        "QD recompression (one question)": (
            [n for n, r in lcirc if r["qd"]["query_dependent"]],
            [r["qd"]["s"] for _, r in lcirc if r["qd"]["query_dependent"]],
            "s-",
        ),
        "vector index (MiniLM)": ([n for n, _ in vector], [r["build"]["s"] for _, r in vector], "^-"),
        "full-attention prefill, measured": ([r["tokens"] for _, r in prefill], [r["build"]["s"] for _, r in prefill], "kx"),
    }
    if fit and lcirc:
        xs = [n for n, _ in lcirc]
        series["full-attention prefill, a N + b N^2"] = (xs, [fit[0] * n + fit[1] * n * n for n in xs], "k--")
    _plot(folder / "build_time.png", "Reading a book: time", "seconds", series)
    names.append("build_time.png")

    answered = [(n, r) for n, r in lcirc if "answer" in r]
    series = {
        "with memory": ([n for n, _ in answered], [r["answer"]["memory"]["answer_s"] for _, r in answered], "o-"),
        "window only": ([n for n, _ in answered], [r["answer"]["window"]["answer_s"] for _, r in answered], "k--"),
        "first token, with memory": (
            [n for n, _ in answered],
            [r["answer"]["memory"]["first_token_s"] for _, r in answered],
            "s-",
        ),
        "first token, window only": (
            [n for n, _ in answered],
            [r["answer"]["window"]["first_token_s"] for _, r in answered],
            "k:",
        ),
    }
    _plot(
        folder / "answer_time.png",
        f"Answering ({answered[0][1]['answer']['new_tokens'] if answered else '?'} new tokens)",
        "seconds",
        series,
    )
    names.append("answer_time.png")

    series = {
        "LCIRC build": ([n for n, _ in lcirc], [r["build"]["peak_increase_mib"] for _, r in lcirc], "o-"),
        "LCIRC, any phase, beyond the loaded model": ([n for n, _ in lcirc], [beyond_backbone_mib(r) for _, r in lcirc], "s-"),
        "vector index build": ([n for n, _ in vector], [r["build"]["peak_increase_mib"] for _, r in vector], "^-"),
        "full-attention prefill": (
            [r["tokens"] for _, r in prefill],
            [r["build"]["peak_increase_mib"] for _, r in prefill],
            "kx-",
        ),
    }
    _plot(folder / "peak_rss.png", "Peak RSS increase", "MiB", series)
    names.append("peak_rss.png")

    series = {
        "LCIRC: compress + answer window": ([n for n, _ in lcirc], [r["flops_context"]["lcirc"] for _, r in lcirc], "o-"),
        "full attention over the book": ([n for n, _ in lcirc], [r["flops_context"]["full"] for _, r in lcirc], "k--"),
        "vector index build (MiniLM)": ([n for n, _ in vector], [r["build"]["flops"] for _, r in vector], "^-"),
    }
    _plot(folder / "flops.png", "Analytic FLOPs", "FLOPs", series)
    names.append("flops.png")
    return names


def markdown(report: dict[str, Any], figure_names: list[str], figure_dir: str, history: list[dict[str, Any]]) -> str:
    env = report["environment"]
    lines = [
        "# Performance: LCIRC against full attention and vector-index RAG",
        "",
        (
            f"Measured by `{report['command'].strip()}` in {env['total_s'] / 60:.1f} min on {env['cpu_count']} CPU cores "
            f"(torch {env['torch']}, Python {env['python']}); load average {env['loadavg_start'][0]:.2f} at the start, "
            f"{env['loadavg_end'][0]:.2f} at the end. Every row ran in a fresh process. Backbone `smollm2-135m-instruct` in float32."
        ),
        "",
        "## Targets (issue 9)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for target, measured, met in verdicts(report):
        lines.append(f"| {target} | {measured} | {'yes' if met else 'no' if met is not None else '-'} |")

    lcirc = _rows(report["lcirc"])
    vector = dict(_rows(report["vector"]))
    fit = prefill_fit(report["prefill"])
    adapter = next((r for _, r in lcirc if _ok(r)), {})
    if adapter:
        c = adapter["config"]
        lines += [
            "",
            (
                f"Adapter: {adapter['adapter']}; segment {c['segment_len']} tokens, K = {c['num_latents']} latents, "
                f"{c['perceiver_layers']} Perceiver layers, GCA before layers {c['gca_layers']}, query-dependent: {c['query_dependent']}."
            ),
        ]
    lines += [
        "",
        "## Reading a book",
        "",
        "LCIRC compresses the book into memory; the vector index splits it into 254-word-piece chunks and embeds each with",
        "all-MiniLM-L6-v2 (`llama-index-embeddings-huggingface`, batch 64) into a `VectorStoreIndex`; full attention is one",
        "prefill of the backbone over the book (measured up to 8K, beyond which the backbone has no positions: the",
        "least-squares fit `a N + b N^2` of the measured prefills is shown instead, marked *). Peak = RSS increase over the",
        "process with its model loaded.",
        "",
        "| tokens | LCIRC s | tok/s | peak MiB | FLOPs | vector index s | chunks | peak MiB | FLOPs | vector / LCIRC | full prefill s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    prefill = {r["tokens"]: r for _, r in _rows(report["prefill"]) if _ok(r)}
    for n, r in lcirc:
        if not _ok(r):
            lines.append(f"| {n:,} | {r.get('error')} |" + " |" * 9)
            continue
        b = r["build"]
        v = vector.get(n)
        vcells = (
            [
                f"{v['build']['s']:.1f}",
                f"{v['chunks']:,}",
                f"{v['build']['peak_increase_mib']:,.0f}",
                f"{v['build']['flops']:.2e}",
                f"{v['build']['s'] / b['s']:.1f}x",
            ]
            if _ok(v)
            else ["-"] * 5
        )
        if n in prefill:
            full = f"{prefill[n]['build']['s']:.1f}"
        elif fit:
            full = f"{fit[0] * n + fit[1] * n * n:,.0f}*"
        else:
            full = "-"
        lines.append(
            f"| {r['tokens']:,} | {b['s']:.2f} | {r['tokens'] / b['s']:,.0f} | {b['peak_increase_mib']:,.0f} | {b['flops']:.2e} | "
            + " | ".join(vcells)
            + f" | {full} |"
        )
    if prefill:
        lines += [
            "",
            "Full-attention prefills measured: "
            + ", ".join(
                f"{n:,} tokens {r['build']['s']:.1f} s ({r['build']['flops']:.2e} FLOPs, peak +{r['build']['peak_increase_mib']:,.0f} MiB)"
                for n, r in sorted(prefill.items())
            )
            + ".",
        ]
        if fit:
            lines.append(f"Fit: t = {fit[0]:.3e} N + {fit[1]:.3e} N^2 seconds.")

    lines += [
        "",
        "## QD recompression and answering",
        "",
        f"QD recompression: `memory_for_query(memory, question)` for one question. Answer: {NEW_TOKENS_NOTE}",
        "",
        "| tokens | memory vectors | QD s | QD peak MiB | first token, memory / window s | tok/s, memory / window | answer, memory / window s | ratio | beyond model MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in lcirc:
        if not _ok(r):
            continue
        q = r["qd"]
        cells = [f"{r['tokens']:,}", f"{r['vectors']:,}", f"{q['s']:.2f}", f"{q['peak_increase_mib']:,.0f}"]
        if "answer" in r:
            a = r["answer"]
            cells += [
                f"{a['memory']['first_token_s']:.2f} / {a['window']['first_token_s']:.2f}",
                f"{a['memory']['decode_tokens_per_s']:.1f} / {a['window']['decode_tokens_per_s']:.1f}",
                f"{a['memory']['answer_s']:.2f} / {a['window']['answer_s']:.2f}",
                f"{a['ratio']:.2f}x",
            ]
        else:
            cells += ["-"] * 4
        cells.append(f"{beyond_backbone_mib(r):,.0f}")
        lines.append("| " + " | ".join(cells) + " |")

    lines += [
        "",
        "## FLOPs (analytic, `lcirc_plugins.eval.flops`)",
        "",
        "| tokens | LCIRC | full attention | saving |",
        "|---:|---:|---:|---:|",
    ]
    for n, r in lcirc:
        if _ok(r):
            f = r["flops_context"]
            lines.append(f"| {r['tokens']:,} | {f['lcirc']:.2e} | {f['full']:.2e} | {100 * (1 - f['lcirc'] / f['full']):.2f}% |")

    if history:
        lines += [
            "",
            "## Optimisations, before and after",
            "",
            "Each row is a run of `python benchmarks/performance.py --sizes 131072 --no-vector --no-prefill --label ...` at the",
            "commit that made the change (same machine, nothing else running), newest last.",
            "",
            "| change | build 128K s | QD 128K s | answer with memory s | window only s | ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for entry in history:
            r = entry["lcirc"].get("131072")
            if not _ok(r):
                continue
            a = r.get("answer")
            answer = (
                [f"{a['memory']['answer_s']:.2f}", f"{a['window']['answer_s']:.2f}", f"{a['ratio']:.2f}x"] if a else ["-"] * 3
            )
            qd = f"{r['qd']['s']:.2f}" if r["qd"]["query_dependent"] else "- (not QD)"
            lines.append(f"| {entry['label']} | {r['build']['s']:.2f} | {qd} | " + " | ".join(answer) + " |")

    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({figure_dir}/{name})" for name in figure_names]
    return "\n".join(lines) + "\n"


NEW_TOKENS_NOTE = "64 new tokens forced with `min_new_tokens`, greedy; median of 3 interleaved runs; decoding speed = 63 / (answer - first token)."


def write_report(report: dict[str, Any], path: Path, figure_dir: Path, history_path: Path, profile_path: Path) -> None:
    history = []
    if history_path.is_file():
        history = [json.loads(line) for line in history_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = {name: read_section(path, name) for name in SECTIONS}  # measured by their own scripts
    report = json.loads(json.dumps(report))  # int keys -> str, as read back from the JSON
    names = figures(report, figure_dir)
    text = markdown(report, names, figure_dir.name, history)
    if profile_path.is_file():
        text += (
            "\n## Where the time goes (`benchmarks/profile_hot_paths.py`, torch.profiler at 128K tokens)\n\n"
            + profile_path.read_text(encoding="utf-8")
        )
    path.write_text(text, encoding="utf-8")
    for name, section in kept.items():
        if section:
            write_section(section, path, name)
