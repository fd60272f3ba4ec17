"""``lcirc-eval``: perplexity by length and passkey grids for LCIRC and its baselines, with a report.

Example::

    python -m lcirc_plugins.eval --book ../shared/data/books/stoker-dracula.txt \
        --lengths 8192 32768 --depths 0 0.5 1 --systems truncated full bm25-rag lcirc --out eval-out
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from ..data.synthetic import load_haystack
from ..model.config import LCIRCConfig
from ..model.lcirc_model import LCIRCModel
from .report import write_report
from .systems import build_systems
from .tasks import needle_grid, perplexity_by_length


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
    parser.add_argument("--book", required=True, help="text file (a Gutenberg book) for perplexity and as needle haystack")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--systems", nargs="+", default=["truncated", "full", "bm25-rag", "lcirc"])
    parser.add_argument("--task", default="passkey", choices=["passkey", "niah_single"])
    parser.add_argument("--target-len", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", default="eval-out")
    parser.add_argument("--name", default="eval")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _load(adapter: str | None, backbone: str | None, query_dependent: bool = False) -> LCIRCModel:
    if adapter and adapter != "fresh":
        return LCIRCModel.from_pretrained(adapter, backbone)
    return LCIRCModel.from_backbone(backbone or "smollm2-135m-instruct", LCIRCConfig(query_dependent=query_dependent))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model = _load(args.adapter, args.backbone)
    qd = _load(args.qd_adapter or "fresh", args.backbone, query_dependent=True) if "qd-lcirc" in args.systems else None
    systems = build_systems(model, args.systems, qd)
    text = load_haystack(args.book)
    start = time.perf_counter()
    rows = perplexity_by_length(systems, text, args.lengths, args.target_len, args.seed, progress=True)
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
