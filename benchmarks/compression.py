"""Compression benchmark: throughput, memory and answer latency of LCIRC on the default backbone.

Measures, for SmolLM2-135M-Instruct with an untrained default-config adapter (speed does not depend on
training):

1. ``model.compress`` throughput (tokens/s) at 8K, 32K, 64K, 128K and 256K tokens, and tokenization time
   (``tokenize_with_offsets``) separately;
2. process RSS after model load, and the peak RSS increase during each compression;
3. answer latency for exactly 64 new tokens with a 128K-token memory, and time to first token;
4. a 1,000,000-token compression: time, peak RSS increase and the features' size, compared with what
   keeping hidden states for every token would cost;
5. the default adapter's parameter count and its size in bf16.

Every size runs in a fresh worker process (``--worker``) so that the RSS peaks are separate. After the
model is loaded and the text is built, each worker returns freed heap memory to the OS (``malloc_trim``)
and resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), so ``ru_maxrss`` after compression
is the peak *of the compression*, not of the GGUF loading. Results go to
``benchmarks/results/compression.{json,md,png}``.

Usage::

    .venv/bin/python benchmarks/compression.py                 # everything (~6 min on 2 idle cores)
    .venv/bin/python benchmarks/compression.py --sizes 8192 32768 --no-million --no-answer  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package
from process_memory import (  # benchmarks/ is on sys.path when run as a script
    current_rss_mib,
    peak_rss_mib,
    release_free_memory,
    reset_peak_rss,
)

from lcirc_plugins.data.shared import shared_data_dir

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CORPUS_DIR = shared_data_dir() / "corpus"
BACKBONE = "smollm2-135m-instruct"
PLOT_SIZES = [8 * 1024, 32 * 1024, 64 * 1024, 128 * 1024, 256 * 1024]
MILLION = 1_000_000
ANSWER_SIZE = 128 * 1024
ANSWER_TOKENS = 64
QUESTION = "Who are the main characters, and what happens to them at the end?"
MIB = 2**20


# ----- process memory ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def corpus_text(min_chars: int) -> str:
    """Books of the corpus (sorted by name, repeated if needed) joined until ``min_chars`` is reached."""
    books = sorted(CORPUS_DIR.glob("*.txt"))
    if not books:
        raise FileNotFoundError(f"no *.txt books in {CORPUS_DIR}")
    parts: list[str] = []
    total = 0
    while total < min_chars:
        for book in books:
            parts.append(book.read_text(encoding="utf-8-sig"))
            total += len(parts[-1]) + 2
            if total >= min_chars:
                break
    return "\n\n".join(parts)


def text_of_tokens(tokenizer: Any, num_tokens: int) -> str:
    """A corpus prefix of about ``num_tokens`` tokens (cut at the character end of token ``num_tokens``)."""
    from lcirc_plugins.data.segmentation import tokenize_with_offsets

    chars = num_tokens * 5
    while True:
        text = corpus_text(chars)
        tokens = tokenize_with_offsets(tokenizer, text)
        if len(tokens) >= num_tokens:
            return text[: int(tokens.ends[num_tokens - 1])]
        chars *= 2


# ----- worker: one size in one process ----------------------------------------------------------------


def adapter_parameters(model: Any) -> dict[str, Any]:
    """Parameter count of the adapter, split into compressor and GCA blocks, and its bf16 size."""
    compressor = sum(p.numel() for p in model.adapter.compressor.parameters())
    gca = sum(p.numel() for p in model.adapter.gca.parameters())
    total = sum(p.numel() for p in model.adapter.parameters())
    return {
        "total": total,
        "compressor": compressor,
        "gca_blocks": gca,
        "gca_layers": list(model.config.gca_layers),
        "bf16_mb": total * 2 / 1e6,
        "bf16_mib": total * 2 / MIB,
        "backbone_parameters": sum(p.numel() for p in model.backbone.parameters()),
    }


def time_answers(model: Any, memory: Any, repeats: int) -> dict[str, Any]:
    """Latency of a 64-token answer (forced with min_new_tokens), first-token times, and a no-memory baseline."""
    n = ANSWER_TOKENS
    model.answer(QUESTION, memory, max_new_tokens=4)  # warm-up: K/V projections, generate set-up

    def answer_once(mem: Any, max_new: int) -> float:
        start = time.perf_counter()
        model.answer(QUESTION, mem, max_new_tokens=max_new, min_new_tokens=max_new)
        return time.perf_counter() - start

    def stream_once() -> tuple[float, float]:
        start = time.perf_counter()
        first = None
        for _piece in model.stream_answer(QUESTION, memory, max_new_tokens=n, min_new_tokens=n):
            if first is None:
                first = time.perf_counter() - start
        return float(first if first is not None else float("nan")), time.perf_counter() - start

    # Interleaved, so that a burst of load from other processes hits every measurement alike.
    with_memory, first_token, without_memory, streams = [], [], [], []
    for _ in range(repeats):
        with_memory.append(answer_once(memory, n))
        first_token.append(answer_once(memory, 1))
        streams.append(stream_once())
        without_memory.append(answer_once(None, n))
    median = statistics.median
    return {
        "memory_tokens": memory.num_tokens,
        "memory_vectors": memory.num_vectors,
        "new_tokens": n,
        "repeats": repeats,
        "answer_s": with_memory,
        "answer_median_s": median(with_memory),
        "decode_tokens_per_s": n / median(with_memory),
        "first_token_s": first_token,
        "first_token_median_s": median(first_token),
        "stream_first_piece_s": [s[0] for s in streams],
        "stream_first_piece_median_s": median(s[0] for s in streams),
        "stream_total_median_s": median(s[1] for s in streams),
        "answer_no_memory_s": without_memory,
        "answer_no_memory_median_s": median(without_memory),
    }


def run_worker(size: int, json_out: Path, repeats: int, answer_repeats: int, threads: int | None, warmup: bool) -> None:
    import torch

    from lcirc_plugins.data.segmentation import tokenize_with_offsets
    from lcirc_plugins.model.lcirc_model import LCIRCModel

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    model = LCIRCModel.from_backbone(BACKBONE)
    load_s = time.perf_counter() - start
    result: dict[str, Any] = {
        "target_tokens": size,
        "load_s": load_s,
        "torch_threads": torch.get_num_threads(),
        "rss_after_load_mib": current_rss_mib(),
        "peak_rss_after_load_mib": peak_rss_mib(),
        "adapter": adapter_parameters(model),
        "loadavg_start": os.getloadavg(),
    }

    text = text_of_tokens(model.tokenizer, size)
    if warmup:  # first-call costs (adapter fingerprint, kernel set-up) are not part of the throughput
        model.compress(text[:8000])
    release_free_memory()

    result["peak_reset"] = reset_peak_rss()
    result["rss_before_compress_mib"] = rss_before = current_rss_mib()
    times: list[float] = []
    cpu_times: list[float] = []
    memory: Any = None
    for repeat in range(max(1, repeats)):
        memory = None  # free the previous result before compressing again
        cpu_start, start = cpu_seconds(), time.perf_counter()
        memory = model.compress(text, progress=True)
        times.append(time.perf_counter() - start)
        cpu_times.append(cpu_seconds() - cpu_start)
        if repeat == 0:  # the first compression alone decides the peak
            result["peak_rss_during_compress_mib"] = peak = peak_rss_mib()
            result["peak_rss_increase_mib"] = peak - rss_before
            result["rss_after_compress_mib"] = current_rss_mib()
    result["process_peak_rss_mib"] = max(peak_rss_mib(), result["peak_rss_after_load_mib"])
    result["compress_runs_s"] = times
    result["compress_s"] = compress_s = statistics.median(times)
    result["compress_best_s"] = min(times)
    result["compress_cpu_s"] = statistics.median(cpu_times)

    result.update(
        num_tokens=memory.num_tokens,
        num_chars=len(text),
        num_segments=memory.num_segments,
        num_vectors=memory.num_vectors,
        tokens_per_s=memory.num_tokens / compress_s,
        tokens_per_s_best=memory.num_tokens / min(times),
        tokens_per_cpu_s=memory.num_tokens / result["compress_cpu_s"],
        features_mib=memory.features.numel() * 4 / MIB,
        token_ids_mib=memory.token_ids.numel() * memory.token_ids.element_size() / MIB,
        # what tokenize_with_offsets holds during compress: ids, starts, ends (int64 each)
        tokenized_mib=memory.num_tokens * 3 * 8 / MIB,
        hidden_states_all_tokens_mib=memory.num_tokens * memory.features.shape[-1] * 4 / MIB,
    )

    start = time.perf_counter()
    tokenize_with_offsets(model.tokenizer, text)
    result["tokenize_s"] = time.perf_counter() - start
    result["tokenize_tokens_per_s"] = memory.num_tokens / result["tokenize_s"]

    if answer_repeats > 0:
        result["answer"] = time_answers(model, memory, answer_repeats)
    result["loadavg_end"] = os.getloadavg()
    json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# ----- driver -----------------------------------------------------------------------------------------


def run_size(size: int, answer_repeats: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one worker process and return its JSON (or the error it died with)."""
    json_out = args.out_dir / f"compression_worker_{size}.json"
    json_out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--size", str(size), "--json-out", str(json_out)]
    command += ["--answer-repeats", str(answer_repeats), "--repeats", str(1 if size >= MILLION else args.repeats)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if not args.warmup:
        command.append("--no-warmup")
    start = time.perf_counter()
    completed = subprocess.run(command, timeout=args.worker_timeout, check=False)
    wall = time.perf_counter() - start
    if completed.returncode != 0 or not json_out.is_file():
        return {"target_tokens": size, "error": f"worker exited with code {completed.returncode}", "worker_wall_s": wall}
    result = json.loads(json_out.read_text(encoding="utf-8"))
    result["worker_wall_s"] = wall
    return result


def million_analysis(runs: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """Does the RSS growth from 128K to 1M tokens match the features, or the hidden states of every token?"""
    big, ref = runs.get(MILLION), runs.get(ANSWER_SIZE)
    if not big or not ref or "error" in big or "error" in ref:
        return None
    measured = big["peak_rss_increase_mib"] - ref["peak_rss_increase_mib"]
    expected = sum(big[k] - ref[k] for k in ("features_mib", "token_ids_mib", "tokenized_mib"))
    hidden = big["hidden_states_all_tokens_mib"] - ref["hidden_states_all_tokens_mib"]
    return {
        "measured_increase_difference_mib": measured,
        "expected_features_plus_ids_difference_mib": expected,
        "hidden_states_difference_mib": hidden,
        "measured_over_expected": measured / expected,
        "measured_over_hidden_states": measured / hidden,
    }


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    runs: list[dict[str, Any]] = report["runs"]
    env = report["environment"]
    lines = [
        "# LCIRC compression benchmark",
        "",
        (
            f"Backbone `{BACKBONE}` (float32), untrained default-config adapter; {env['cpu_count']} CPU cores, "
            f"torch {env['torch']} with {runs[0].get('torch_threads', '?')} threads; one fresh process per size. "
            f"Load average during the run: {env['loadavg_min']:.1f}-{env['loadavg_max']:.1f} (above 2, other processes competed for the cores)."
        ),
        "",
        "## Compression",
        "",
        'Times are the median of the runs (1 run at 1M tokens); "best" is the fastest run. "tok/CPU-s" divides by',
        'the process\'s CPU time. RSS columns in MiB; "increase" = peak during compression - RSS just before it.',
        "",
        (
            "| tokens | chars | compress s | tok/s | best tok/s | tok/CPU-s | tokenize s | RSS after load | RSS before "
            "| peak during | increase | features | hidden states, all tokens |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['target_tokens']:,} | {r['error']} |" + " |" * 11)
            continue
        cells = [
            f"{r['num_tokens']:,}",
            f"{r['num_chars']:,}",
            fmt(r["compress_s"], 2),
            fmt(r["tokens_per_s"], 0),
            fmt(r["tokens_per_s_best"], 0),
            fmt(r["tokens_per_cpu_s"], 0),
            fmt(r["tokenize_s"], 2),
            *(fmt(r[k]) for k in ("rss_after_load_mib", "rss_before_compress_mib", "peak_rss_during_compress_mib")),
            *(fmt(r[k]) for k in ("peak_rss_increase_mib", "features_mib", "hidden_states_all_tokens_mib")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    peaks = [r["process_peak_rss_mib"] for r in runs if "error" not in r]
    if peaks:
        lines += ["", f"Highest process peak RSS (`ru_maxrss`, including model loading): {fmt(max(peaks))} MiB."]

    analysis = report.get("million_vs_128k")
    if analysis:
        lines += [
            "",
            "## 1M tokens vs 128K tokens",
            "",
            "| quantity | MiB |",
            "|---|---:|",
            f"| measured: peak increase(1M) - peak increase(128K) | {fmt(analysis['measured_increase_difference_mib'])} |",
            (
                "| expected: features + token ids + tokenizer ids/offsets, 1M - 128K | "
                f"{fmt(analysis['expected_features_plus_ids_difference_mib'])} |"
            ),
            f"| hidden states for every token (N x d x 4 B), 1M - 128K | {fmt(analysis['hidden_states_difference_mib'])} |",
            "",
            (
                f"Measured / expected = {analysis['measured_over_expected']:.2f}; "
                f"measured / hidden states = {analysis['measured_over_hidden_states']:.2f}."
            ),
        ]

    answer = next((r["answer"] for r in runs if "answer" in r), None)
    if answer:
        lines += [
            "",
            (
                f"## Answer latency ({answer['new_tokens']} new tokens, memory of {answer['memory_tokens']:,} tokens = "
                f"{answer['memory_vectors']:,} vectors; median of {answer['repeats']})"
            ),
            "",
            "| measurement | seconds |",
            "|---|---:|",
            f"| answer, {answer['new_tokens']} tokens, with memory | {fmt(answer['answer_median_s'], 2)} |",
            (
                f"| answer, {answer['new_tokens']} tokens, no memory (plain backbone) | "
                f"{fmt(answer['answer_no_memory_median_s'], 2)} |"
            ),
            f"| time to first token (answer with max_new_tokens=1) | {fmt(answer['first_token_median_s'], 2)} |",
            f"| time to first streamed piece (stream_answer) | {fmt(answer['stream_first_piece_median_s'], 2)} |",
            f"| stream_answer total | {fmt(answer['stream_total_median_s'], 2)} |",
            "",
            f"Decoding speed with memory: {answer['decode_tokens_per_s']:.1f} tokens/s.",
        ]

    adapter = report.get("adapter")
    if adapter:
        lines += [
            "",
            "## Default adapter",
            "",
            "| parameters | compressor | GCA blocks (layers) | bf16 size |",
            "|---:|---:|---:|---:|",
            (
                f"| {adapter['total']:,} | {adapter['compressor']:,} | {adapter['gca_blocks']:,} ({adapter['gca_layers']}) | "
                f"{adapter['bf16_mb']:.1f} MB ({adapter['bf16_mib']:.1f} MiB) |"
            ),
            "",
            f"Backbone parameters, for comparison: {adapter['backbone_parameters']:,}.",
        ]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in report["runs"] if "error" not in r]
    tokens = [r["num_tokens"] for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(tokens, [r["tokens_per_s"] for r in runs], "o-", label="compress")
    left.plot(tokens, [r["tokenize_tokens_per_s"] for r in runs], "s--", label="tokenize only")
    left.set(xscale="log", yscale="log", xlabel="input tokens", ylabel="tokens / s", title="Throughput")
    left.legend()
    right.plot(tokens, [r["peak_rss_increase_mib"] for r in runs], "o-", label="peak RSS increase (measured)")
    right.plot(tokens, [r["features_mib"] for r in runs], "s--", label="memory features")
    right.plot(tokens, [r["hidden_states_all_tokens_mib"] for r in runs], ":", label="hidden states of all tokens")
    right.set(xscale="log", yscale="log", xlabel="input tokens", ylabel="MiB", title="Memory during compression")
    right.legend()
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"LCIRC compression, {BACKBONE}, untrained default adapter, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_driver(args: argparse.Namespace) -> None:
    import torch
    from tqdm.auto import tqdm

    args.out_dir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(args.sizes) | ({ANSWER_SIZE} if args.answer_repeats > 0 else set()))
    if args.million:
        sizes.append(MILLION)
    runs: dict[int, dict[str, Any]] = {}
    for size in tqdm(sizes, desc="Sizes", unit="size"):
        repeats = args.answer_repeats if size == ANSWER_SIZE else 0
        runs[size] = run_size(size, repeats, args)
        run = runs[size]
        summary = run.get("error") or f"{run['tokens_per_s']:,.0f} tok/s, peak +{run['peak_rss_increase_mib']:,.1f} MiB"
        tqdm.write(f"{size:>9,} tokens: {summary}")

    ok = [r for r in runs.values() if "error" not in r]
    loads = [x for r in ok for x in (*r["loadavg_start"], *r["loadavg_end"])] or [float("nan")]
    report = {
        "command": " ".join([".venv/bin/python", "benchmarks/compression.py", *sys.argv[1:]]),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_min": min(loads),
            "loadavg_max": max(loads),
        },
        "adapter": ok[0]["adapter"] if ok else None,
        "runs": [runs[s] for s in sizes],
        "million_vs_128k": million_analysis(runs),
    }
    (args.out_dir / "compression.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out_dir / "compression.md").write_text(markdown(report), encoding="utf-8")
    if ok:
        plot(report, args.out_dir / "compression.png")
    print(markdown(report))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=PLOT_SIZES, help="token counts to compress")
    parser.add_argument("--no-million", dest="million", action="store_false", help="skip the 1,000,000-token run")
    parser.add_argument("--repeats", type=int, default=3, help="compressions per size below 1M (median time is reported)")
    parser.add_argument("--answer-repeats", type=int, default=3, help="repeats of each answer timing (0 skips them)")
    parser.add_argument("--no-answer", dest="answer_repeats", action="store_const", const=0, help="skip answer latency")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="do not warm up compress first")
    parser.add_argument("--worker-timeout", type=float, default=3600.0, help="seconds before a worker is killed")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:
        if args.size is None or args.json_out is None:
            raise SystemExit("--worker needs --size and --json-out")
        run_worker(args.size, args.json_out, args.repeats, args.answer_repeats, args.threads, args.warmup)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
