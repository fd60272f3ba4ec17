"""Training curves as a PNG next to ``metrics.jsonl``: loss, the three held-out losses, and the gates.

The held-out panel is the one to read: memory helps only where ``eval_loss`` drops below
``eval_loss_other_memory`` (another example's memory), not merely below ``eval_loss_no_memory``.
"""

from __future__ import annotations

import json
from pathlib import Path

EVAL_KEYS = ("eval_loss", "eval_loss_other_memory", "eval_loss_no_memory", "eval_whole_loss")


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
    evals = [r for r in records if "eval_loss" in r]
    answers = [r for r in evals if "eval_answer_contains" in r]
    panels = 4 if answers else 3
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    ax_loss, ax_eval, ax_gate = axes[:3]
    steps = [r["step"] for r in records]
    ax_loss.plot(steps, [r["loss"] for r in records], alpha=0.25, label="loss")
    ax_loss.plot(steps, smooth([r["loss"] for r in records], 50), label="loss (mean of 50)")
    ax_loss.set_title("training loss")
    for key in EVAL_KEYS:
        points = [(r["step"], r[key]) for r in evals if key in r]
        ax_eval.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
    ax_eval.set_title("held-out loss")
    gates = sorted({name for r in records for name in r.get("gates", {})})
    for name in gates:
        ax_gate.plot(steps, [r.get("gates", {}).get(name) for r in records], label=name)
    ax_gate.set_title("tanh(gate)")
    if answers:  # question answering: held-out answers, and the length curriculum's distractors when there is one
        ax_answer = axes[3]
        answer_steps = [r["step"] for r in answers]
        ax_answer.plot(answer_steps, [r["eval_answer_contains"] for r in answers], marker="o", label="answer in the reply")
        ax_answer.plot(answer_steps, [r.get("eval_answer_exact", 0.0) for r in answers], marker="o", label="exact answer")
        if any("eval_whole_answer_contains" in r for r in answers):  # the evidence's segment read whole
            ax_answer.plot(answer_steps, [r.get("eval_whole_answer_contains") for r in answers], marker="s", label="answer in the reply, read whole")
        ax_answer.set_ylim(-0.05, 1.05)
        ax_answer.set_title("held-out answers")
        if any("distractor_segments" in r for r in answers):
            twin = ax_answer.twinx()
            twin.step(
                answer_steps,
                [r.get("distractor_segments", 0) for r in answers],
                where="post",
                color="grey",
                label="distractor segments",
            )
            twin.set_ylabel("most distractor segments")
            twin.legend(fontsize=6, loc="lower right")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = run / "training.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
