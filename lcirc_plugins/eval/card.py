"""The shipped adapter's measured table: every number in its ``MODEL_CARD.md`` comes from this script.

It evaluates an adapter and the baselines on books held out from training (``$LCIRC_SHARED_DATA/books``; the
adapter trains on ``$LCIRC_SHARED_DATA/corpus``): passkey accuracy by length x depth, single-needle retrieval
in book haystacks, perplexity of the last window given a long prefix, and book QA (facts and cloze), with
the cost of each. ``LCIRC`` is the adapter compressing without the question, ``QD-LCIRC`` the same adapter
conditioned on it. Example::

    python -m lcirc_plugins.eval.card --adapter runs/stage2-smollm2/adapter --samples 100 --out runs/card
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data import synthetic
from ..data.shared import shared_data_dir
from ..model.lcirc_model import LCIRCModel
from ..model.loading import load_model
from ..model.status import CARD_END, CARD_START
from .metrics import substring_match
from .report import markdown_table, write_report
from .systems import BM25RAG, LCIRCSystem, System, TruncatedBackbone
from .tasks import needle_grid, perplexity_by_length

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)

ANSWER_TOKENS = 16  # the card's answer budget: bare numbers and names fit, sentences may not


def card_systems(model: LCIRCModel) -> list[System]:
    """The truncated backbone, BM25 RAG, LCIRC (no question; with the window's last tokens in the decoder, and
    with the whole context in memory) and QD-LCIRC (the same two ways), all on one loaded model."""
    systems: list[System] = [
        TruncatedBackbone(model),
        BM25RAG(model),
        LCIRCSystem(model, use_query=False),
        LCIRCSystem(model, use_query=False, keep_window=False),
    ]
    if model.config.query_dependent:
        systems += [LCIRCSystem(model), LCIRCSystem(model, keep_window=False)]
    return systems


def _mean(values: Sequence[float]) -> float:
    return round(statistics.fmean(values), 4) if values else float("nan")


def needle_rows(
    systems: list[System],
    task: str,
    lengths: Sequence[int],
    samples: int,
    haystack: str | None,
    seed: int,
    max_new_tokens: int = ANSWER_TOKENS,
) -> list[dict[str, Any]]:
    """``samples`` examples per (length, depth) cell: one :func:`needle_grid` pass per seed."""
    rows = []
    for s in tqdm(range(samples), desc=task):
        rows += needle_grid(systems, lengths, DEPTHS, seed * 10_000 + s, task=task, haystack=haystack, max_new_tokens=max_new_tokens)
    return rows


def book_qa_rows(
    systems: list[System], task: str, book: str, length: int, samples: int, seed: int, max_new_tokens: int = ANSWER_TOKENS
) -> list[dict[str, Any]]:
    """Questions whose answer sits at a random depth of a ``length``-token piece of a held-out book."""
    generate: Callable[..., synthetic.LongContextExample] = synthetic.TASKS[task]
    tokenizer = systems[0].tokenizer
    rows = []
    for s in tqdm(range(samples), desc=task):
        example = generate(synthetic.derive_seed(seed, f"{task}-{s}"), book, num_tokens=length, tokenizer=tokenizer)
        for system in systems:
            start = time.perf_counter()
            prediction = system.answer(example.context, example.question, max_new_tokens)
            rows.append(
                {
                    "task": task,
                    "system": system.name,
                    "length": length,
                    "depth": round(example.depth, 3),
                    "accuracy": substring_match(prediction, example.answers, example.metadata.get("match", "any")),
                    "prediction": prediction,
                    "answer": example.answer,
                    "wall_time_s": round(time.perf_counter() - start, 3),
                    "flops": system.flops(length),
                }
            )
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean accuracy / perplexity and cost per (task, system, length); ``n`` is the number of samples."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["system"], row["length"])].append(row)
    table = []
    for (task, system, length), group in groups.items():
        entry: dict[str, Any] = {"task": task, "system": system, "length": length, "n": len(group)}
        if task == "perplexity":
            nlls = [r["nll"] for r in group if r.get("nll") is not None]
            entry["perplexity"] = round(2.718281828459045 ** statistics.fmean(nlls), 3) if nlls else None
        else:
            entry["accuracy"] = _mean([r["accuracy"] for r in group if r.get("accuracy") is not None])
            by_depth = defaultdict(list)
            for r in group:
                if r.get("accuracy") is not None and r["task"] != "book_facts" and r["task"] != "book_cloze":
                    by_depth[r["depth"]].append(r["accuracy"])
            if by_depth:
                entry["worst_depth_accuracy"] = min(_mean(v) for v in by_depth.values())
        entry["flops"] = group[0].get("flops")
        entry["wall_time_s"] = _mean([r["wall_time_s"] for r in group if r.get("wall_time_s") is not None])
        table.append(entry)
    return table


def relative_gains(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Perplexity gain of each system over the truncated backbone at the same length (negative = worse)."""
    base = {r["length"]: r["perplexity"] for r in table if r["task"] == "perplexity" and r["system"] == "truncated"}
    out = []
    for r in table:
        if r["task"] == "perplexity" and r["system"] != "truncated" and r.get("perplexity") and base.get(r["length"]):
            out.append(
                {
                    "system": r["system"],
                    "length": r["length"],
                    "gain_vs_truncated": round(1 - r["perplexity"] / base[r["length"]], 4),
                }
            )
    return out


def measured_markdown(table: list[dict[str, Any]], gains: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    columns = ("task", "system", "length", "n", "accuracy", "worst_depth_accuracy", "perplexity", "flops", "wall_time_s")
    text = [
        f"Measured on {meta['date']} with `{meta['command']}` ({meta['total_wall_time_s']:.0f} s on this machine).\n",
        markdown_table(table, columns),
    ]
    if meta.get("segments_reused"):
        reused, read = meta["segments_reused"], meta["segments_read"]
        text.append(
            f"\nThe memories' segments: {read} read, {reused} reused ({reused / (reused + read):.0%}: identical token ids read "
            "earlier in the run, e.g. repeated filler, are not read again; exact, see `LCIRCModel.reusing_segments`). "
            "`lcirc-memory`'s wall time includes building its memory, so a first build of new text takes longer: see "
            "`benchmarks/RESULTS.md` for build times.\n"
        )
    if gains:
        text += [
            "\nPerplexity gain over the truncated backbone (1 - ppl / ppl_truncated):\n",
            markdown_table(gains, ("system", "length", "gain_vs_truncated")),
        ]
    return "\n".join(text)


def section_markers(section: str | None = None) -> tuple[str, str]:
    """The markers around a measured section: the card's main table, or a named one (e.g. more samples of a few tasks)."""
    return (CARD_START, CARD_END) if not section else (f"<!-- measured:{section}:start -->", f"<!-- measured:{section}:end -->")


def write_card(card: Path, measured: str, section: str | None = None) -> None:
    """Replace one measured section of an existing card (between its markers), keeping the prose and the others."""
    start, end = section_markers(section)
    text = card.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{card} has no {start} ... {end} section to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    card.write_text(f"{head}{start}\n{measured}\n{end}{tail}", encoding="utf-8")


CARD_TASKS = ("passkey", "niah_single", "perplexity", "book_facts", "book_cloze")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lcirc_plugins.eval.card", description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="default", help="adapter directory or 'default'")
    parser.add_argument("--books", default=str(shared_data_dir() / "books"), help="held-out books ($LCIRC_SHARED_DATA/books)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--needle-length", type=int, default=32768, help="context of the book-haystack needle and QA tasks")
    parser.add_argument("--samples", type=int, default=100, help="examples per cell (needles: per length x depth)")
    parser.add_argument(
        "--systems", nargs="+", default=None, help="names of the systems to measure (default: all of card_systems)"
    )
    parser.add_argument("--tasks", nargs="+", default=list(CARD_TASKS), choices=CARD_TASKS, help="the tasks to measure (default: all)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=ANSWER_TOKENS,
        help="answer budget of the needle and book-QA tasks: a reply in a sentence states the number after ~12 tokens",
    )
    parser.add_argument(
        "--segment-cache-mb", type=int, default=2048, help="reuse segments already read in this run, up to this many MB (0: off)"
    )
    parser.add_argument("--out", default="runs/card")
    parser.add_argument("--card", default=None, help="a MODEL_CARD.md whose measured section is rewritten")
    parser.add_argument(
        "--section", default=None, help="with --card: the named section <!-- measured:NAME:start --> instead of the main one"
    )
    return parser.parse_args(argv)


def measure(systems: list[System], args: argparse.Namespace, books: str) -> list[dict[str, Any]]:
    """Every row of the tasks ``args`` asks for."""
    per_depth = max(1, args.samples // len(DEPTHS))
    rows: list[dict[str, Any]] = []
    if "passkey" in args.tasks:
        rows += needle_rows(systems, "passkey", args.lengths, per_depth, None, args.seed, args.max_new_tokens)
    if "niah_single" in args.tasks:
        rows += needle_rows(systems, "niah_single", [args.needle_length], per_depth, books, args.seed, args.max_new_tokens)
    if "perplexity" in args.tasks:
        for s in tqdm(range(args.samples), desc="perplexity"):
            rows += perplexity_by_length(systems, books, args.lengths, 128, args.seed * 10_000 + s)
    for task in ("book_facts", "book_cloze"):
        if task in args.tasks:
            rows += book_qa_rows(systems, task, books, args.needle_length, args.samples, args.seed, args.max_new_tokens)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    model = load_model(args.adapter)  # "default" falls back to the untrained adapter, as everywhere else
    systems = card_systems(model)
    if args.systems:
        known = [system.name for system in systems]
        unknown = sorted(set(args.systems) - set(known))
        if unknown:
            raise SystemExit(f"error: unknown systems {unknown}; this adapter's card measures {known}")
        systems = [system for system in systems if system.name in args.systems]
    books = synthetic.load_haystack(args.books)
    reuse = model.reusing_segments(args.segment_cache_mb) if args.segment_cache_mb > 0 else contextlib.nullcontext()
    with reuse as cache:
        rows = measure(systems, args, books)
    table = summarise(rows)
    gains = relative_gains(table)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m lcirc_plugins.eval.card " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "total_wall_time_s": time.perf_counter() - start,
        "adapter_fingerprint": model.adapter_fingerprint,
        "args": vars(args),
        "segments_read": cache.misses if cache else None,
        "segments_reused": cache.hits if cache else None,
    }
    out = Path(args.out)
    write_report(rows, out, "card-rows", meta)
    (out / "card.json").write_text(json.dumps({"meta": meta, "table": table, "gains": gains}, indent=2))
    measured = measured_markdown(table, gains, meta)
    (out / "measured.md").write_text(measured)
    if args.card:
        write_card(Path(args.card), measured, args.section)
    print(measured)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
