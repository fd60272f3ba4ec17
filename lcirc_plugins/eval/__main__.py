"""``lcirc-eval``: perplexity by length, passkey grids and QA benchmarks for LCIRC and its baselines, with a report.

Examples::

    python -m lcirc_plugins.eval --book "$LCIRC_SHARED_DATA/books/stoker-dracula.txt" \
        --lengths 8192 32768 --depths 0 0.5 1 --systems truncated full bm25-rag lcirc --out eval-out
    python -m lcirc_plugins.eval --qa LongBench/hotpotqa.jsonl InfiniteBench/longbook_qa_eng.jsonl \
        --qa-limit 50 --systems truncated bm25-rag lcirc --out qa-out
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from ..data.synthetic import NEEDLE_TASKS, load_haystack
from ..model.backbone import DEFAULT_BACKBONE
from ..model.config import LCIRCConfig
from ..model.lcirc_model import LCIRCModel
from ..model.loading import load_model
from .datasets import FORMATS, QARecord, load_benchmark
from .report import write_report
from .systems import build_systems
from .tasks import needle_grid, perplexity_by_length, qa_benchmark


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lcirc-eval", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbone", default=None, help="backbone name or path (default: the adapter's, or SmolLM2-135M-Instruct)"
    )
    parser.add_argument(
        "--adapter", default=None, help="adapter directory or 'default'; without it a fresh untrained adapter is used"
    )
    parser.add_argument(
        "--qd-adapter", default=None, help="a query-dependent adapter for the qd-lcirc system ('fresh' for an untrained one)"
    )
    parser.add_argument("--book", default=None, help="text file (a Gutenberg book) for perplexity and as needle haystack")
    parser.add_argument("--qa", nargs="+", default=[], metavar="FILE", help="QA benchmark JSONL files to answer and score")
    parser.add_argument(
        "--qa-format", default="auto", choices=["auto", *FORMATS], help="benchmark of the --qa files (auto: from their fields)"
    )
    parser.add_argument(
        "--qa-dataset",
        default=None,
        help="the task of the --qa files when their file name is not it (InfiniteBench, L-Eval); overrides LongBench's 'dataset'",
    )
    parser.add_argument("--qa-limit", type=int, default=None, help="answer only the first N records of each --qa file")
    parser.add_argument(
        "--qa-max-new-tokens", type=int, default=64, help="cap on each benchmark's answer budget (0: the official budgets)"
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument(
        "--systems",
        nargs="+",
        default=["truncated", "extended-fa", "bm25-rag", "lcirc"],
        help="truncated, full, extended-fa, bm25-rag, lcirc, qd-lcirc",
    )
    parser.add_argument(
        "--full-max-tokens",
        type=int,
        default=None,
        help="skip extended-fa beyond this many tokens (full attention over 128K tokens takes hours on a CPU)",
    )
    parser.add_argument("--task", default="passkey", choices=list(NEEDLE_TASKS))
    parser.add_argument("--target-len", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", default="eval-out")
    parser.add_argument("--name", default="eval")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.book is None and not args.qa:
        parser.error("give --book (perplexity and needles), --qa FILE (QA benchmarks), or both")
    return args


def _load(adapter: str | None, backbone: str | None, query_dependent: bool = False) -> LCIRCModel:
    """The adapter by the package's one loading rule ("default" falls back to the untrained adapter), or a
    fresh one for ``None``/"fresh"."""
    if adapter and adapter != "fresh":
        return load_model(adapter, backbone)
    return LCIRCModel.from_backbone(backbone or DEFAULT_BACKBONE, LCIRCConfig(query_dependent=query_dependent))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    records: list[QARecord] = []
    for path in args.qa:  # read every file first, so a bad one fails before any model is loaded
        records += load_benchmark(path, args.qa_format, dataset=args.qa_dataset)[: args.qa_limit]
    model = _load(args.adapter, args.backbone)
    qd = _load(args.qd_adapter or "fresh", args.backbone, query_dependent=True) if "qd-lcirc" in args.systems else None
    systems = build_systems(model, args.systems, qd, full_max_tokens=args.full_max_tokens)
    start = time.perf_counter()
    rows = []
    if args.book:
        text = load_haystack(args.book)
        rows += perplexity_by_length(systems, text, args.lengths, args.target_len, args.seed, progress=True)
        rows += needle_grid(
            systems,
            args.lengths,
            args.depths,
            args.seed,
            task=args.task,
            haystack=text,
            max_new_tokens=args.max_new_tokens,
            progress=True,
        )
    if records:
        rows += qa_benchmark(systems, records, max_new_tokens=args.qa_max_new_tokens or None, progress=True)
    meta = {
        **{k: v for k, v in vars(args).items()},
        "total_wall_time_s": round(time.perf_counter() - start, 2),
        "lcirc_config": model.config.to_dict(),
    }
    paths = write_report(rows, Path(args.out), args.name, meta)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
