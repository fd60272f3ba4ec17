"""Reports: a JSON of all rows, a Markdown table, and PNG plots (perplexity vs length, cost vs length,
an accuracy heatmap per system and needle task, a score bar chart per QA dataset).

QA rows (one per record and system) stay in the JSON; the Markdown shows their means per dataset and system.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    "task",
    "system",
    "length",
    "depth",
    "perplexity",
    "accuracy",
    "flops",
    "wall_time_s",
    "tokens_per_s",
    "peak_rss_mb",
    "skipped",
)


QA_COLUMNS = (
    "benchmark",
    "dataset",
    "metric",
    "system",
    "n",
    "skipped",
    "score",
    "length",
    "flops",
    "wall_time_s",
    "tokens_per_s",
    "peak_rss_mb",
)


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def qa_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (benchmark, dataset, metric, system) in first-seen order: ``n`` records, ``skipped`` ones
    the system could not read, mean ``score`` over the answered ones, mean length / FLOPs / time / tokens per
    second, and the highest peak memory."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("task") == "qa":
            groups[(row["benchmark"], row["dataset"], row["metric"], row["system"])].append(row)
    summary = []
    for (benchmark, dataset, metric, system), group in groups.items():
        score = _mean([r["score"] for r in group])
        flops = _mean([r["flops"] for r in group])
        summary.append(
            {
                "benchmark": benchmark,
                "dataset": dataset,
                "metric": metric,
                "system": system,
                "n": len(group),
                "skipped": sum(r["score"] is None for r in group),
                "score": None if score is None else round(score, 4),
                "length": round(_mean([r["length"] for r in group]) or 0),
                "flops": None if flops is None else round(flops),
                "wall_time_s": _mean([r["wall_time_s"] for r in group]),
                "tokens_per_s": _mean([r["tokens_per_s"] for r in group]),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in group),
            }
        )
    return summary


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and abs(value) >= 10**6:
        return f"{value:.3e}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """A Markdown table of ``rows`` with those of ``columns`` that any row has."""
    columns = [c for c in columns if any(c in row for row in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _plot_lines(rows: list[dict[str, Any]], field: str, ylabel: str, path: Path, log: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        if row.get(field) is not None:
            series[row["system"]].append((row["length"], row[field]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for system, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=system)
    ax.set_xscale("log", base=2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_heatmap(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lengths = sorted({r["length"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for r in rows:
        if r.get("accuracy") is not None:
            grid[depths.index(r["depth"]), lengths.index(r["length"])] = r["accuracy"]
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.5 * len(depths) + 2))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(l) for l in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_bars(rows: list[dict[str, Any]], title: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.1 * len(rows) + 2.5, 4))
    values = [r["score"] or 0.0 for r in rows]
    bars = ax.bar(range(len(rows)), values, color="tab:blue")
    ax.bar_label(bars, labels=["skipped" if r["score"] is None else f"{r['score']:.3f}" for r in rows])
    ax.set_xticks(range(len(rows)), [r["system"] for r in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, name: str = "eval", meta: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``{name}.json`` (``{"name", "meta", "rows"}``, plus ``"qa_summary"`` with QA rows), ``{name}.md``
    and PNG plots; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    qa = qa_summary(rows)
    other = [r for r in rows if r.get("task") != "qa"]
    paths: dict[str, Path] = {}
    paths["json"] = out / f"{name}.json"
    document: dict[str, Any] = {"name": name, "meta": meta or {}, "rows": rows}
    if qa:
        document["qa_summary"] = qa
    paths["json"].write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths["md"] = out / f"{name}.md"
    text = f"# {name}\n\n" + (markdown_table(other) if other or not qa else "")
    if qa:
        text += (
            ("\n" if other else "")
            + "## QA benchmarks\n\nMean score in [0, 1] over the answered records (the benchmarks print 100x); "
            + f"per-record predictions are in {paths['json'].name}.\n\n"
            + markdown_table(qa, QA_COLUMNS)
        )
    paths["md"].write_text(text, encoding="utf-8")
    for (benchmark, dataset), group in sorted(_group_qa(qa).items()):
        key = f"qa_{benchmark}_{dataset}"
        paths[key] = out / f"{name}-qa-{benchmark}-{dataset}.png"
        _plot_bars(group, f"{benchmark} {dataset}", f"mean {group[0]['metric']}", paths[key])
    ppl = [r for r in rows if r.get("task") == "perplexity"]
    if ppl:
        paths["perplexity_png"] = out / f"{name}-perplexity.png"
        _plot_lines(ppl, "perplexity", "perplexity of the final window", paths["perplexity_png"], log=True)
        paths["cost_png"] = out / f"{name}-cost.png"
        _plot_lines(ppl, "flops", "forward FLOPs (analytic)", paths["cost_png"], log=True)
    needles = [r for r in rows if r.get("task") not in (None, "perplexity") and "depth" in r]
    for (task, system), group in sorted(_group(needles).items()):
        key = f"heatmap_{task}_{system}"
        paths[key] = out / f"{name}-{task}-{system}.png"
        _plot_heatmap(group, f"{task}: {system}", paths[key])
    return paths


def _group_qa(summary: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in summary:
        groups[(r["benchmark"], r["dataset"])].append(r)
    return groups


def _group(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["system"])].append(r)
    return groups
