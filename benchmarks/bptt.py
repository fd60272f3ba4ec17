"""BPTT benchmark: training-step speed and peak memory of full, truncated and selective-state BPTT.

For the default backbone (SmolLM2-135M-Instruct, float32) with the default ``LCIRCConfig`` except
``gate_init=0.1`` (so the loss reaches the compressor, as after the first steps of real training), and
for every BPTT mode (full; truncated, window 8; selective state, window 8) and number of compressed
segments (4, 16, 32, 64 segments of 512 tokens), one stage-1 training step is:

    grad_steps = steps_with_gradient(S, mode, window, rng)
    memory = compress_for_training(model, segments, grad_steps, gradient_checkpointing=...)
    loss = model(window_ids, memory=memory, labels=window_ids).loss     # 256-token decoder window
    loss.backward(); AdamW(model.trainable_parameters()).step(); zero_grad(set_to_none=True)

Token ids come from real text (the books of ``$LCIRC_SHARED_DATA/corpus``); every step reads a different
stretch of it: S segments followed by the decoder window that continues them.

Measured per configuration: steps/s (3 timed steps after 1 warm-up step) with the time split into
compression, decoder forward, backward and optimizer; and the peak RSS increase during the steps over the
RSS right before the first (warm-up) step, after the model, the optimizer and the token ids are ready.
Each configuration runs in a fresh worker process (``--worker``) so that peaks are separate. The peak is
read twice: the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` before each
step) and a background thread sampling ``VmRSS`` every 10 ms; the reported peak is the larger of the two.
A worker whose RSS passes ``--max-rss-mib`` (default 8192) stops itself and reports how far it got.

Full BPTT is also run with gradient checkpointing of the recurrence at 16 and 64 segments.

Results go to ``benchmarks/results/bptt.{json,md,png}`` and ``bptt_worker_<mode>_<S>[_ckpt].json``.

Workers run with one torch thread by default (``--threads 0`` leaves torch's choice): with other jobs on
the 2 cores, a step with 2 threads took 42-58 s against 7-8 s with 1 thread.

Usage::

    .venv/bin/python benchmarks/bptt.py                          # everything (~20-30 min on 2 cores)
    .venv/bin/python benchmarks/bptt.py --segments 4 --modes full --no-checkpointing   # quick check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package
from process_memory import current_rss_mib, peak_rss_mib, reset_peak_rss  # benchmarks/ is on sys.path when run as a script

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CORPUS_DIR = REPO_ROOT.parent / "shared" / "data" / "corpus"
BACKBONE = "smollm2-135m-instruct"
MODES = ("full", "truncated", "selective")
SEGMENT_COUNTS = [4, 16, 32, 64]
CHECKPOINT_SEGMENTS = [16, 64]
BPTT_WINDOW = 8
SEGMENT_LEN = 512
DECODER_WINDOW = 256
GATE_INIT = 0.1
MIB = 2**20
CAP_EXIT_CODE = 3


# ----- process memory ---------------------------------------------------------------------------------


class RSSSampler:
    """Samples ``VmRSS`` every ``interval`` seconds in a daemon thread; keeps the maximum since :meth:`reset`.

    If RSS passes ``cap_mib``, ``on_cap(rss_mib)`` is called from the sampling thread (it should end the
    process: a training step cannot be interrupted from another thread).
    """

    def __init__(self, interval: float, cap_mib: float, on_cap: Any) -> None:
        self.interval, self.cap_mib, self.on_cap = interval, cap_mib, on_cap
        self.max_mib = current_rss_mib()
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RSSSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        with self._lock:
            self.max_mib = current_rss_mib()

    def peak(self) -> float:
        with self._lock:
            return max(self.max_mib, current_rss_mib())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = current_rss_mib()
            with self._lock:
                self.max_mib = max(self.max_mib, rss)
                self.samples += 1
            if rss > self.cap_mib:
                self.on_cap(rss)
                return


# ----- input tokens -----------------------------------------------------------------------------------


def corpus_token_ids(tokenizer: Any, num_tokens: int) -> Any:
    """At least ``num_tokens`` token ids of the corpus books (sorted by name, read as utf-8-sig), [N]."""
    import torch

    from lcirc_plugins.data.segmentation import tokenize_with_offsets

    books = sorted(CORPUS_DIR.glob("*.txt"))
    if not books:
        raise FileNotFoundError(f"no *.txt books in {CORPUS_DIR}")
    pieces: list[Any] = []
    total = 0
    while total < num_tokens:
        for book in books:
            ids = tokenize_with_offsets(tokenizer, book.read_text(encoding="utf-8-sig")).ids
            pieces.append(ids)
            total += len(ids)
            if total >= num_tokens:
                break
    return torch.cat(pieces)[:num_tokens]


# ----- worker: one (mode, segments, checkpointing) configuration in one process -----------------------


def grad_norm(params: Any) -> float:
    total = 0.0
    for p in params:
        if p.grad is not None:
            total += float(p.grad.detach().float().pow(2).sum())
    return total**0.5


def run_worker(args: argparse.Namespace) -> None:
    import torch

    from lcirc_plugins.model.config import LCIRCConfig
    from lcirc_plugins.model.lcirc_model import LCIRCModel
    from lcirc_plugins.training.bptt import compress_for_training, steps_with_gradient

    json_out: Path = args.json_out
    result: dict[str, Any] = {
        "mode": args.mode,
        "num_segments": args.num_segments,
        "gradient_checkpointing": args.gradient_checkpointing,
        "bptt_window": args.bptt_window,
        "segment_len": args.segment_len,
        "decoder_window": args.decoder_window,
        "gate_init": GATE_INIT,
        "loadavg_start": os.getloadavg(),
        "pid": os.getpid(),
    }

    def write(extra: dict[str, Any] | None = None) -> None:
        json_out.write_text(json.dumps({**result, **(extra or {})}, indent=2) + "\n", encoding="utf-8")

    def on_cap(rss: float) -> None:  # called from the sampler thread: record, then end the process at once
        write({"error": f"RSS reached {rss:,.0f} MiB > cap {args.max_rss_mib:,.0f} MiB; worker stopped",
               "rss_at_cap_mib": rss, "loadavg_end": os.getloadavg()})
        os._exit(CAP_EXIT_CODE)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = LCIRCModel.from_backbone(BACKBONE, LCIRCConfig(gate_init=GATE_INIT))
    model.train()
    result["load_s"] = time.perf_counter() - start
    result["torch_threads"] = torch.get_num_threads()
    result["rss_after_load_mib"] = current_rss_mib()
    params = model.trainable_parameters()
    compressor_params = list(model.adapter.compressor.parameters())
    result["trainable_parameters"] = sum(p.numel() for p in params)
    # grads + AdamW exp_avg + exp_avg_sq, float32: allocated at the first step and kept afterwards
    result["grads_and_adam_state_mib"] = 3 * result["trainable_parameters"] * 4 / MIB
    optimizer = torch.optim.AdamW(params, lr=args.lr)

    total_steps = args.warmup_steps + args.steps
    per_step = args.num_segments * args.segment_len + args.decoder_window
    ids = corpus_token_ids(model.tokenizer, per_step * total_steps)
    examples = []
    for j in range(total_steps):
        chunk = ids[j * per_step : (j + 1) * per_step]
        segments = [chunk[i * args.segment_len : (i + 1) * args.segment_len][None] for i in range(args.num_segments)]
        window = chunk[args.num_segments * args.segment_len :][None]
        examples.append((segments, window))
    del ids
    rng = random.Random(f"{args.seed}-bptt")

    sampler = RSSSampler(args.sample_interval, args.max_rss_mib, on_cap).start()
    gc.collect()
    result["hwm_reset_supported"] = reset_peak_rss()
    result["rss_before_first_step_mib"] = rss_ref = current_rss_mib()

    def one_step(segments: list[Any], window: Any) -> dict[str, Any]:
        grad_steps = steps_with_gradient(len(segments), args.mode, args.bptt_window, rng)
        t0 = time.perf_counter()
        memory = compress_for_training(model, segments, grad_steps, None, args.gradient_checkpointing)
        t1 = time.perf_counter()
        loss = model(window, memory=memory, labels=window).loss
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        norms = {
            "grad_norm_compressor": grad_norm(compressor_params),
            "grad_norm_initial_latents": grad_norm([model.adapter.compressor.initial_latents]),
            "grad_norm_all": grad_norm(params),
        }
        t4 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        del memory
        return {
            "loss": float(loss.detach()),
            "num_grad_steps": len(grad_steps),
            "grad_steps": sorted(grad_steps),
            "compress_s": t1 - t0,
            "forward_s": t2 - t1,
            "backward_s": t3 - t2,
            "optimizer_s": t5 - t4,
            "step_s": (t5 - t0) - (t4 - t3),  # without the diagnostic grad norms
            **norms,
        }

    def measured_step(j: int) -> dict[str, Any]:
        gc.collect()
        rss_before = current_rss_mib()
        reset_peak_rss()
        sampler.reset()
        record = one_step(*examples[j])
        hwm, sampled = peak_rss_mib(), sampler.peak()
        peak = max(hwm, sampled)
        record.update(
            rss_before_step_mib=rss_before,
            peak_rss_hwm_mib=hwm,
            peak_rss_sampled_mib=sampled,
            peak_rss_mib=peak,
            peak_increase_mib=peak - rss_ref,  # over the RSS before the first (warm-up) step
            peak_increase_over_step_start_mib=peak - rss_before,
            rss_after_step_mib=current_rss_mib(),
        )
        return record

    warmup = [measured_step(j) for j in range(args.warmup_steps)]
    timed = [measured_step(args.warmup_steps + j) for j in range(args.steps)]
    sampler.stop()
    timed_s = sum(r["step_s"] for r in timed)
    mean = lambda key: sum(r[key] for r in timed) / len(timed)
    result.update(
        warmup=warmup,
        steps=timed,
        steps_per_s=len(timed) / timed_s,
        mean_step_s=timed_s / len(timed),
        mean_compress_s=mean("compress_s"),
        mean_forward_s=mean("forward_s"),
        mean_backward_s=mean("backward_s"),
        mean_optimizer_s=mean("optimizer_s"),
        mean_loss=mean("loss"),
        num_grad_steps=timed[-1]["num_grad_steps"],
        peak_increase_mib=max(r["peak_increase_mib"] for r in timed),
        warmup_peak_increase_mib=max((r["peak_increase_mib"] for r in warmup), default=float("nan")),
        peak_rss_mib=max(r["peak_rss_mib"] for r in timed),
        peak_hwm_minus_sampled_mib=max(r["peak_rss_hwm_mib"] - r["peak_rss_sampled_mib"] for r in timed),
        rss_samples=sampler.samples,
        memory_tensor_mib=args.num_segments * model.config.num_latents * model.adapter.compressor.initial_latents.shape[1] * 4 / MIB,
        loadavg_end=os.getloadavg(),
    )
    write()


# ----- driver -----------------------------------------------------------------------------------------


def config_name(mode: str, segments: int, checkpointing: bool) -> str:
    return f"{mode}_{segments}" + ("_ckpt" if checkpointing else "")


def run_config(mode: str, segments: int, checkpointing: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Run one worker process and return its JSON (or what it died with)."""
    json_out = args.out_dir / f"bptt_worker_{config_name(mode, segments, checkpointing)}.json"
    json_out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--mode", mode, "--num-segments", str(segments)]
    command += ["--json-out", str(json_out), "--bptt-window", str(args.bptt_window), "--segment-len", str(args.segment_len)]
    command += ["--decoder-window", str(args.decoder_window), "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)]
    command += ["--max-rss-mib", str(args.max_rss_mib), "--sample-interval", str(args.sample_interval)]
    command += ["--lr", str(args.lr), "--seed", str(args.seed)]
    command += ["--threads", str(args.threads)]
    if checkpointing:
        command.append("--gradient-checkpointing")
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, timeout=args.worker_timeout, check=False)
        code: int | str = completed.returncode
    except subprocess.TimeoutExpired:
        code = f"timeout after {args.worker_timeout:.0f} s"
    wall = time.perf_counter() - start
    base = {"mode": mode, "num_segments": segments, "gradient_checkpointing": checkpointing, "worker_wall_s": wall, "exit_code": code}
    if not json_out.is_file():
        return {**base, "error": f"worker exited with {code} and wrote no result"}
    result = json.loads(json_out.read_text(encoding="utf-8"))
    if code != 0 and "error" not in result:
        result["error"] = f"worker exited with {code}"
    return {**result, **base}


def label(r: dict[str, Any]) -> str:
    if r["mode"] == "full":
        return "full" + (" + checkpointing" if r["gradient_checkpointing"] else "")
    return f"{r['mode']} (window {r.get('bptt_window', BPTT_WINDOW)})"


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def growth(runs: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """Per line: MiB of peak increase per extra segment, fitted by least squares over its segment counts."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in runs:
        if "error" not in r:
            lines.setdefault(label(r), []).append((r["num_segments"], r["peak_increase_mib"]))
    out = []
    for name, points in lines.items():
        if len(points) < 2:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
        # above the BPTT window truncated/selective should be flat: fit those points too
        above = [(x, y) for x, y in points if x >= 16]
        if len(above) >= 2 and not name.startswith("full"):
            ax, ay = [p[0] for p in above], [p[1] for p in above]
            amx, amy = sum(ax) / len(ax), sum(ay) / len(ay)
            slope_above = sum((x - amx) * (y - amy) for x, y in above) / sum((x - amx) ** 2 for x in ax)
        else:
            slope_above = slope
        out.append((name, slope, slope_above))
    return out


def markdown(report: dict[str, Any]) -> str:
    runs: list[dict[str, Any]] = report["runs"]
    env = report["environment"]
    ok = [r for r in runs if "error" not in r]
    threads = ok[0]["torch_threads"] if ok else "?"
    settings = report["settings"]
    model_note = (
        f"AdamW on the adapter's {ok[0]['trainable_parameters']:,} parameters; " if ok else "AdamW on the adapter's parameters; "
    )
    state_note = f" (~{fmt(ok[0]['grads_and_adam_state_mib'])} MiB, created by the first step)" if ok else ""
    lines = [
        "# LCIRC BPTT benchmark",
        "",
        (f"Backbone `{BACKBONE}` (float32, frozen), default `LCIRCConfig` with `gate_init={GATE_INIT}`; "
        f"{settings['segment_len']}-token segments, a {settings['decoder_window']}-token decoder window with labels, "
        f"{model_note}{env['cpu_count']} CPU cores, torch {env['torch']} with {threads} threads; one fresh process per row; "
        f"steps/s over {settings['steps']} steps after {settings['warmup_steps']} warm-up step(s). "
        f"Load average (1 min) seen by the workers: {env['loadavg_min']:.1f}-{env['loadavg_max']:.1f} "
        "(other jobs shared the machine, so timings are noisy)."),
        "",
        ("Peak increase = peak RSS during the timed steps minus the RSS right before the first (warm-up) step "
        "(model, optimizer and token ids ready). It includes the adapter's gradients and AdamW state"
        f"{state_note}, and is the max of the kernel high-water mark (`VmHWM`, reset before each step) and 10 ms "
        "`VmRSS` sampling."),
        "",
        ("| mode | segments | steps with grad | steps/s | s/step | compress s | forward s | backward s | optim s | "
        "peak increase MiB | warm-up step peak increase MiB | process peak RSS MiB | RSS before MiB | loss | load avg start/end |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {label(r)} | {r['num_segments']} | {r['error']} |" + " |" * 12)
            continue
        lines.append(
            f"| {label(r)} | {r['num_segments']} | {r['num_grad_steps']} | {r['steps_per_s']:.3f} | {fmt(r['mean_step_s'], 2)} | "
            f"{fmt(r['mean_compress_s'], 2)} | {fmt(r['mean_forward_s'], 2)} | {fmt(r['mean_backward_s'], 2)} | "
            f"{fmt(r['mean_optimizer_s'], 3)} | {fmt(r['peak_increase_mib'])} | {fmt(r['warmup_peak_increase_mib'])} | "
            f"{fmt(r['peak_rss_mib'])} | {fmt(r['rss_before_first_step_mib'])} | {r['mean_loss']:.3f} | "
            f"{r['loadavg_start'][0]:.1f} / {r['loadavg_end'][0]:.1f} |"
        )
    slopes = growth(runs)
    if slopes:
        lines += ["", "## Memory growth with the number of segments", "", "| mode | MiB per segment (all points) | MiB per segment (16-64 segments) |", "|---|---:|---:|"]
        lines += [f"| {name} | {fmt(s, 2)} | {fmt(sa, 2)} |" for name, s, sa in slopes]
    lines += [
        "",
        (f"With {report['settings']['bptt_window']}-step windows, truncated and selective BPTT equal full BPTT at 4 segments "
        "(every step keeps its graph)."),
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in report["runs"] if "error" not in r]
    by_line: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_line.setdefault(label(r), []).append(r)
    styles = {"full": "o-", "truncated": "s-", "selective": "^-"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, rows in by_line.items():
        rows = sorted(rows, key=lambda r: r["num_segments"])
        xs = [r["num_segments"] for r in rows]
        style = "D--" if rows[0]["gradient_checkpointing"] else styles.get(rows[0]["mode"], "o-")
        left.plot(xs, [r["peak_increase_mib"] for r in rows], style, label=name, markersize=6)
        right.plot(xs, [r["steps_per_s"] for r in rows], style, label=name, markersize=6)
    ticks = sorted({r["num_segments"] for r in runs})
    left.set(xlabel=f"segments of {report['settings']['segment_len']} tokens", ylabel="MiB",
             title="Peak RSS increase during a training step")
    right.set(xlabel=f"segments of {report['settings']['segment_len']} tokens", ylabel="training steps / s",
              title="Training speed")
    for axis in (left, right):
        axis.set_xticks(ticks)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend()
    env = report["environment"]
    fig.suptitle(
        f"LCIRC BPTT, {BACKBONE} (fp32), window {report['settings']['decoder_window']} tokens, AdamW, CPU "
        f"({env['cpu_count']} cores, load avg {env['loadavg_min']:.1f}-{env['loadavg_max']:.1f})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_driver(args: argparse.Namespace) -> None:
    import torch
    from tqdm.auto import tqdm

    args.out_dir.mkdir(parents=True, exist_ok=True)
    configs = [(mode, s, False) for s in sorted(args.segments) for mode in args.modes]
    if args.checkpointing:
        configs += [("full", s, True) for s in sorted(args.checkpoint_segments)]
    runs = []
    bar = tqdm(configs, desc="BPTT configs", unit="config")
    for mode, segments, checkpointing in bar:
        bar.set_postfix_str(config_name(mode, segments, checkpointing))
        r = run_config(mode, segments, checkpointing, args)
        runs.append(r)
        tqdm.write(f"{config_name(mode, segments, checkpointing):>16}: " + (
            r.get("error") or f"{r['steps_per_s']:.3f} steps/s, peak +{r['peak_increase_mib']:,.0f} MiB, load {r['loadavg_end'][0]:.1f}"))

    ok = [r for r in runs if "loadavg_start" in r]
    loads = [x for r in ok for x in (r["loadavg_start"][0], r.get("loadavg_end", r["loadavg_start"])[0])] or [float("nan")]
    report = {
        "command": " ".join([".venv/bin/python", "benchmarks/bptt.py", *sys.argv[1:]]),
        "settings": {
            "backbone": BACKBONE,
            "gate_init": GATE_INIT,
            "bptt_window": args.bptt_window,
            "segment_len": args.segment_len,
            "decoder_window": args.decoder_window,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "lr": args.lr,
            "max_rss_mib": args.max_rss_mib,
            "sample_interval_s": args.sample_interval,
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_min": min(loads),
            "loadavg_max": max(loads),
        },
        "runs": runs,
        "growth_mib_per_segment": [{"line": n, "all_points": s, "from_16": sa} for n, s, sa in growth(runs)],
    }
    (args.out_dir / "bptt.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out_dir / "bptt.md").write_text(markdown(report), encoding="utf-8")
    if any("error" not in r for r in runs):
        plot(report, args.out_dir / "bptt.png")
    print(markdown(report))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="BPTT modes to measure")
    parser.add_argument("--segments", type=int, nargs="+", default=SEGMENT_COUNTS, help="numbers of compressed segments")
    parser.add_argument("--checkpoint-segments", type=int, nargs="+", default=CHECKPOINT_SEGMENTS,
                        help="segment counts for full BPTT with gradient checkpointing")
    parser.add_argument("--no-checkpointing", dest="checkpointing", action="store_false", help="skip the checkpointing runs")
    parser.add_argument("--bptt-window", type=int, default=BPTT_WINDOW, help="steps with gradient in truncated/selective mode")
    parser.add_argument("--segment-len", type=int, default=SEGMENT_LEN, help="tokens per compressed segment")
    parser.add_argument("--decoder-window", type=int, default=DECODER_WINDOW, help="tokens of the decoder window (with labels)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; 0 = torch's choice (on a shared 2-core machine 2 threads ran 6-8x slower than 1)")
    parser.add_argument("--max-rss-mib", type=float, default=8192.0, help="a worker whose RSS passes this stops and reports it")
    parser.add_argument("--sample-interval", type=float, default=0.01, help="seconds between VmRSS samples")
    parser.add_argument("--worker-timeout", type=float, default=1800.0, help="seconds before a worker is killed")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--num-segments", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:
        if args.mode is None or args.num_segments is None or args.json_out is None:
            raise SystemExit("--worker needs --mode, --num-segments and --json-out")
        run_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
