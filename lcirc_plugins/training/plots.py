"""Training curves as a PNG next to ``metrics.jsonl``: loss, the three held-out losses, and the gates.

The held-out panel is the one to read: memory helps only where ``eval_loss`` drops below
``eval_loss_other_memory`` (another example's memory), not merely below ``eval_loss_no_memory``.
"""

from __future__ import annotations

import json
from pathlib import Path

EVAL_KEYS = ("eval_loss", "eval_loss_other_memory", "eval_loss_no_memory")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smooth(values: list[float], width: int) -> list[float]:
    """Trailing mean over ``width`` values (the per-step loss of one example is noisy)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - width] if i >= width else 0.0)
        out.append(total / min(i + 1, width))
    return out


def plot_metrics(run_dir: str | Path) -> Path:
    """Write ``training.png`` for a run directory; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    records = read_metrics(run / "metrics.jsonl")
    fig, (ax_loss, ax_eval, ax_gate) = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in records]
    ax_loss.plot(steps, [r["loss"] for r in records], alpha=0.25, label="loss")
    ax_loss.plot(steps, smooth([r["loss"] for r in records], 50), label="loss (mean of 50)")
    ax_loss.set_title("training loss")
    evals = [r for r in records if "eval_loss" in r]
    for key in EVAL_KEYS:
        points = [(r["step"], r[key]) for r in evals if key in r]
        ax_eval.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
    ax_eval.set_title("held-out loss")
    gates = sorted({name for r in records for name in r.get("gates", {})})
    for name in gates:
        ax_gate.plot(steps, [r.get("gates", {}).get(name) for r in records], label=name)
    ax_gate.set_title("tanh(gate)")
    for ax in (ax_loss, ax_eval, ax_gate):
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = run / "training.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
