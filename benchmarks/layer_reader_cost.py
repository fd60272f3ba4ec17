"""Cost of the layer reader (issue 15): memory size, build, question and answer time, per book size.

    python benchmarks/layer_reader_cost.py [--adapter default] [--runs 131072 131072x8]
    python benchmarks/layer_reader_cost.py --adapter untrained --runs 131072:8 131072:32

Each run (book size in tokens, optionally ``:TOKENS_PER_SLOT``, optionally ``xN``: N such memories read together,
as when a question spans N books) goes in a fresh worker process. ``--adapter`` is the adapter to time: the shipped
default (or any adapter directory), whose architecture fixes its tokens per slot, or ``untrained``: an untrained
adapter of the layer reader's architecture (:data:`LAYER_CONFIG`, no whole-segment readers) with the tokens per slot
of each run, for sweeping that choice (speed does not depend on training). Beside each build: the backbone's
own segment-wise prefill of the same tokens, the floor for a per-layer memory (one frozen forward over the
book). Writes ``benchmarks/results/layer_reader_cost.json`` and the "Layer reader" section of
``benchmarks/RESULTS.md`` (kept there when ``performance.py`` rewrites the rest), to read beside the paper
reader's rows and the MiniLM vector index in that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from performance import BACKBONE, NEW_TOKENS, QUESTION, REPORT, RESULTS_DIR, best_of, book_text, chars_for_sizes
from report_sections import read_section, write_section

SECTION = "layer-reader-cost"
LAYER_CONFIG = {"reader": "layer", "segment_len": 512, "max_segment_len": 512, "slot_selection": True, "query_dependent": True}
DEFAULT_TOKENS_PER_SLOT = 32


def build_model(adapter: str, tokens_per_slot: int | None) -> Any:
    """The adapter to time on the default backbone: ``untrained`` (of :data:`LAYER_CONFIG`) or a saved one."""
    import torch

    from lcirc_plugins import LCIRCConfig, LCIRCModel
    from lcirc_plugins.model.loading import load_model

    if adapter == "untrained":
        torch.manual_seed(0)
        config = LCIRCConfig(**LAYER_CONFIG, tokens_per_slot=tokens_per_slot or DEFAULT_TOKENS_PER_SLOT)
        return LCIRCModel.from_backbone(BACKBONE, config)
    model = load_model(adapter)
    if tokens_per_slot not in (None, model.config.tokens_per_slot):
        raise SystemExit(
            f"error: adapter {adapter!r} was trained with {model.config.tokens_per_slot} tokens per slot, not "
            f"{tokens_per_slot}; drop ':{tokens_per_slot}' from the run, or time --adapter untrained"
        )
    return model


def worker(adapter: str, chars: int, tokens_per_slot: int | None, copies: int = 1) -> dict[str, Any]:
    import torch

    model = build_model(adapter, tokens_per_slot)
    tokens_per_slot = model.config.tokens_per_slot
    text = book_text(chars)
    model.compress(text[:5_000])  # warm-up
    build, memory = best_of(1, lambda: model.compress(text))
    ids = memory.token_ids.long()

    def prefill() -> None:
        with torch.no_grad():
            for piece in torch.split(ids, model.config.segment_len):
                model.backbone.base_model(input_ids=piece[None], use_cache=False)

    floor, _ = best_of(1, prefill)
    # N memories read together: the QD step and the answer see N times the slots (a 1M-token memory as 8 books of
    # 128K), while the build and its floor are one book's.
    # The product's QD step (LCIRCModel.prepare_answer): the memories as the question reads them (its chosen segments
    # over all of them whole, when the adapter has whole readers), then the rows of all of them. The books are distinct memory objects
    # (sharing tensors), each with its own keys/values for the readers, projected as each one's build would.
    books = [memory] + [dataclasses.replace(memory) for _ in range(copies - 1)]
    for book in books[1:]:
        model.keys_values(book)
    question, rows = best_of(3, lambda: model.read_memories(model.for_question_all(books, QUESTION), QUESTION))
    prompt = model.prompt_ids(QUESTION, NEW_TOKENS)

    def answer(memory_rows: Any) -> float:
        begin = time.perf_counter()
        model.generate(prompt, memory=memory_rows, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        return time.perf_counter() - begin

    answer(rows)  # warm-up
    timings: dict[str, list[float]] = {"memory": [], "window": []}
    for _ in range(3):  # interleaved, so load bursts hit both alike
        timings["memory"].append(answer(rows))
        timings["window"].append(answer(None))
    layers = memory.features.shape[1]
    return {
        "adapter": adapter,
        "adapter_fingerprint": model.adapter.fingerprint()[:12],
        "whole_reader": model.config.whole_reader,
        "tokens": memory.num_tokens * copies,
        "books": copies,
        "tokens_per_slot": tokens_per_slot,
        "slots": memory.num_vectors * copies,
        "memory_layers": layers,
        "floats_per_token": memory.features[0].numel() / tokens_per_slot,
        "memory_mib_float32": memory.features.numel() * 4 * copies / 2**20,
        "memory_mib_bfloat16": memory.features.numel() * 2 * copies / 2**20,
        "keys_values_mib": sum(book.projected[1].numel() * book.projected[1].element_size() for book in books) / 2**20
        if memory.projected is not None
        else 0.0,
        "build": build,
        "prefill_floor": floor,
        "build_over_prefill": build["s"] / floor["s"],
        "question_s": question["s"],
        "answer_memory_s": statistics.median(timings["memory"]),
        "answer_window_s": statistics.median(timings["window"]),
        "answer_ratio": statistics.median(timings["memory"]) / statistics.median(timings["window"]),
        "torch_threads": torch.get_num_threads(),
    }


def markdown(rows: list[dict[str, Any]], earlier: list[str] = ()) -> str:
    """The section's table of ``rows``, with the ``earlier`` table lines of runs not measured again (a fresh machine
    has no results file, and the rows it does not re-measure stay)."""
    lines = [
        "## Layer reader (issue 15): per-layer memory cost",
        "",
        (
            "`python benchmarks/layer_reader_cost.py` (default backbone, d = 576; salience-selected slots, QD; "
            f"{rows[0]['torch_threads']} torch threads). Adapter `default` is the shipped one (its whole-segment "
            "readers included); `untrained` is an untrained adapter of the layer reader's architecture without "
            "whole-segment readers, for sweeping tokens per slot. "
            "Build = one frozen forward over the book up to the last memory layer, then slot selection; the floor is "
            "the backbone's own segment-wise prefill of the same tokens. The question step is the product's: the QD "
            "bias scores the stored slots (`LCIRCModel.read_memories`), and with whole readers the question's two "
            "chosen segments (two over all the books it reads) are read whole (one frozen forward over them, "
            "`LCIRCModel.for_question_all`), which the answer reads beside the slots; no other text is re-read. The "
            "build also projects the readers' keys and values of the stored rows (kept with the memory in RAM: the "
            "'+ keys/values' beside its size), so no question or answer projects them again. A row of N books reads "
            "N memories of the size shown at once (question step and answer over all of them); its build and floor "
            "are one book's."
        ),
        "",
        "| adapter | memory layers | whole readers | tokens | books | tokens per slot | slots | memory (float32 / bf16) | build | backbone prefill (floor) | build / floor | question | 64-token answer: memory / window |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table = {run_key(r): table_line(r) for r in rows}
    for line in earlier:
        table.setdefault(line_key(line), line)
    return "\n".join(lines + [table[key] for key in sorted(table)])


def table_line(r: dict[str, Any]) -> str:
    memory = f"{r['memory_mib_float32']:,.0f} / {r['memory_mib_bfloat16']:,.0f} MiB"
    if r.get("keys_values_mib"):
        memory += f" + {r['keys_values_mib']:,.0f} MiB keys/values"
    return (
        f"| {adapter_name(r)} | {r['memory_layers']} | {'yes' if r.get('whole_reader') else 'no'} "
        f"| {r['tokens']:,} | {r.get('books', 1)} | {r['tokens_per_slot']} | {r['slots']:,} | {memory} "
        f"| {r['build']['s']:.1f} s (+{r['build']['peak_increase_mib']:,.0f} MiB) | "
        f"{r['prefill_floor']['s']:.1f} s | {r['build_over_prefill']:.2f}x | {r['question_s'] * 1000:.1f} ms | "
        f"{r['answer_memory_s']:.2f} / {r['answer_window_s']:.2f} s ({r['answer_ratio']:.2f}x) |"
    )


def line_key(line: str) -> tuple[str, int, int, int]:
    """:func:`run_key` of a table line of an earlier run."""
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return cells[0].split(" (")[0], int(cells[3].replace(",", "")), int(cells[4]), int(cells[5])


def earlier_lines() -> list[str]:
    """The table lines of the report's section as it stands."""
    section = read_section(REPORT, SECTION) or ""
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| adapter ")]


def adapter_name(row: dict[str, Any]) -> str:
    name = row.get("adapter", "untrained")  # rows from before --adapter timed the untrained architecture
    return f"{name} ({row['adapter_fingerprint']})" if name != "untrained" and "adapter_fingerprint" in row else name


def parse_run(run: str) -> tuple[int, int | None, int]:
    """``SIZE[:TOKENS_PER_SLOT][xBOOKS]`` -> (size, tokens per slot or None for the adapter's own, books)."""
    run, _, books = run.partition("x")
    size, _, tokens_per_slot = run.partition(":")
    return int(size), int(tokens_per_slot) if tokens_per_slot else None, int(books or 1)


def run_key(row: dict[str, Any]) -> tuple[str, int, int, int]:
    return row.get("adapter", "untrained"), row["tokens"], row.get("books", 1), row["tokens_per_slot"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="default", help="'default' (the shipped adapter), an adapter directory, or 'untrained'")
    parser.add_argument("--runs", nargs="+", default=["131072", "131072x8"], help="SIZE[:TOKENS_PER_SLOT][xBOOKS]")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one run's arguments, as JSON
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    runs = [parse_run(run) for run in args.runs]
    chars = chars_for_sizes(sorted({size for size, _, _ in runs}))
    results = RESULTS_DIR / "layer_reader_cost.json"
    rows = json.loads(results.read_text(encoding="utf-8")) if results.exists() else []  # earlier runs stay unless re-measured
    earlier = earlier_lines()
    for size, tokens_per_slot, books in runs:
        per_slot = f"{tokens_per_slot} per slot" if tokens_per_slot else "the adapter's tokens per slot"
        print(f"[layer-reader-cost] adapter {args.adapter}: {books} x {size:,} tokens, {per_slot}", flush=True)
        job = {"adapter": args.adapter, "chars": chars[size], "tokens_per_slot": tokens_per_slot, "copies": books}
        out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows = sorted([r for r in rows if run_key(r) != run_key(row)] + [row], key=run_key)
        # Written after every run: a long run takes most of an hour here, and what was measured stays.
        RESULTS_DIR.mkdir(exist_ok=True)
        results.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        write_section(markdown(rows, earlier), REPORT, SECTION)
        print(f"[layer-reader-cost] wrote {REPORT}", flush=True)


if __name__ == "__main__":
    main()
