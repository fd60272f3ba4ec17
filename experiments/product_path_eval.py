"""Held-out tasks in a held-out book through the product path: compress the whole text, answer from the memory alone.

    .venv/bin/python experiments/product_path_eval.py runs/default-3-long/adapter --tokens 8192 --samples 20
    .venv/bin/python experiments/product_path_eval.py lcirc_plugins/adapters/default --task niah_single --tokens 32768

The pass-key examples are those of `tests/model/test_default_adapter.py` (seeds derive_seed(2026, i), Treasure
Island). A query-dependent adapter answers each example twice from one compression: with the question scoring
the slots (QD-LCIRC, the product's default) and without (LCIRC). Prints one line per example and a JSON summary
(answers found, seconds per example).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lcirc_plugins.data.shared import shared_data_dir
from lcirc_plugins.data.synthetic import NEEDLE_TASKS, TASKS, derive_seed
from lcirc_plugins.model.loading import load_model

BOOK = shared_data_dir() / "books" / "stevenson-treasure-island.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--task", default="passkey", choices=[*NEEDLE_TASKS, "book_facts"])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--start", type=int, default=0, help="first example index (to extend an earlier run)")
    parser.add_argument("--only", help="comma-separated example indices (a quick screen of known misses)")
    parser.add_argument("--qd-only", action="store_true", help="answer with QD only (no LCIRC baseline)")
    parser.add_argument("--book", default=str(BOOK))
    args = parser.parse_args()
    model = load_model(args.adapter)
    text = Path(args.book).read_text(encoding="utf-8-sig")
    source = {"book": text} if args.task == "book_facts" else {"haystack": text}
    modes = {"qd": True, "no-qd": False} if model.config.query_dependent else {"memory": True}
    if args.qd_only:
        modes = {"qd": True}
    indices = [int(i) for i in args.only.split(",")] if args.only else range(args.start, args.start + args.samples)
    found: dict[str, list[bool]] = {mode: [] for mode in modes}
    started = time.perf_counter()
    for i in indices:
        example = TASKS[args.task](derive_seed(2026, i), num_tokens=args.tokens, tokenizer=model.tokenizer, **source)
        memory = model.compress(example.context)
        line = f"{i:2d} depth {example.depth:.2f} answer {example.answer}"
        for mode, query_dependent in modes.items():
            prepared = model.prepare_answer(example.question, memory, max_new_tokens=24, query_dependent=query_dependent)
            reply = model.generate_text(prepared, max_new_tokens=24)[0]
            found[mode].append(example.answer in reply)
            line += f" | {mode} {'ok ' if found[mode][-1] else 'MISS'} {reply!r}"
        print(line, flush=True)
    seconds = (time.perf_counter() - started) / len(indices)
    summary = {"adapter": args.adapter, "task": args.task, "tokens": args.tokens, "samples": len(indices)}
    print(json.dumps({**summary, **{f"found_{m}": sum(v) for m, v in found.items()}, "s_per_example": round(seconds, 1)}))


if __name__ == "__main__":
    main()
