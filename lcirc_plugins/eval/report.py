"""Reports: a JSON of all rows, a Markdown table, and PNG plots (perplexity vs length, cost vs length,
an accuracy heatmap per system and needle task)."""

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


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and abs(value) >= 10**6:
        return f"{value:.3e}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = [c for c in COLUMNS if any(c in row for row in rows)]
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


def write_report(
    rows: Sequence[dict[str, Any]], out_dir: str | Path, name: str = "eval", meta: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``{name}.json`` (``{"name", "meta", "rows"}``), ``{name}.md`` and PNG plots; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    paths: dict[str, Path] = {}
    paths["json"] = out / f"{name}.json"
    paths["json"].write_text(
        json.dumps({"name": name, "meta": meta or {}, "rows": rows}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    paths["md"] = out / f"{name}.md"
    paths["md"].write_text(f"# {name}\n\n" + markdown_table(rows), encoding="utf-8")
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


def _group(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["system"])].append(r)
    return groups
