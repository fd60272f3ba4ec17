"""Pass keys in a held-out book through the product path: compress the whole text, answer from the memory alone.

    .venv/bin/python experiments/passkey_product_eval.py runs/default-3-long/adapter --tokens 8192 --samples 20

The same examples as `tests/model/test_default_adapter.py` (seeds derive_seed(2026, i), Treasure Island). Prints one
line per example and a JSON summary (keys found, seconds per example).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lcirc_plugins.data.shared import shared_data_dir
from lcirc_plugins.data.synthetic import derive_seed, passkey
from lcirc_plugins.model.loading import load_model

BOOK = shared_data_dir() / "books" / "stevenson-treasure-island.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--start", type=int, default=0, help="first example index (to extend an earlier run)")
    parser.add_argument("--book", default=str(BOOK))
    args = parser.parse_args()
    model = load_model(args.adapter)
    book = Path(args.book).read_text(encoding="utf-8-sig")
    found, started = [], time.perf_counter()
    for i in range(args.start, args.start + args.samples):
        example = passkey(derive_seed(2026, i), num_tokens=args.tokens, tokenizer=model.tokenizer, haystack=book)
        reply = model.answer(example.question, model.compress(example.context), max_new_tokens=16)
        found.append(example.answer in reply)
        print(f"{i:2d} depth {example.depth:.2f} key {example.answer} {'ok ' if found[-1] else 'MISS'} {reply!r}", flush=True)
    seconds = (time.perf_counter() - started) / args.samples
    print(json.dumps({"adapter": args.adapter, "tokens": args.tokens, "found": sum(found), "samples": args.samples, "s_per_example": round(seconds, 1)}))


if __name__ == "__main__":
    main()
