"""The default test's provenance example (a pass key in the middle of 12,000 characters), and variations of it.

    .venv/bin/python experiments/provenance_probe.py runs/r12-joint-softmax/adapter
    .venv/bin/python experiments/provenance_probe.py ADAPTER --variants 10

Variant 0 is exactly `test_the_default_adapters_provenance_quotes_the_pass_key` (tests/fixtures/sample-book.txt,
key 48213, mid-text). Variants 1.. put other keys at other depths of 12,000 characters of other held-out books,
so a candidate is judged on a rate, not on one example. Each is answered with and without QD; the line says
whether the key is in the answer and whether provenance ranks the key's passage first with score > 0.5 (the
test's two conditions).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lcirc_plugins.data.shared import shared_data_dir
from lcirc_plugins.model.loading import load_model

SAMPLE_BOOK = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sample-book.txt"
HELD_OUT = [shared_data_dir() / "books" / name for name in ("stevenson-treasure-island.txt",)]


def example(i: int) -> tuple[str, str]:
    """(text, key) for variant ``i``: 0 is the test's own example."""
    if i == 0:
        book, key, depth = SAMPLE_BOOK.read_text(encoding="utf-8-sig")[:12_000], "48213", 0.5
    else:
        rng = random.Random(i)
        full = HELD_OUT[i % len(HELD_OUT)].read_text(encoding="utf-8-sig")
        start = rng.randrange(len(full) - 12_000)
        book, key, depth = full[start : start + 12_000], str(rng.randrange(10_000, 100_000)), rng.uniform(0.1, 0.9)
    cut = book.index(". ", int(len(book) * depth)) + 2
    sentence = f"The pass key is {key}. Remember it. {key} is the pass key."
    return book[:cut] + sentence + " " + book[cut:], key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--variants", type=int, default=1)
    args = parser.parse_args()
    model = load_model(args.adapter)
    modes = {"qd": True, "no-qd": False} if model.config.query_dependent else {"memory": True}
    passed = {mode: [] for mode in modes}
    for i in range(args.variants):
        text, key = example(i)
        memory = model.compress(text)
        for mode, qd in modes.items():
            prepared = model.prepare_answer("What is the pass key?", memory, max_new_tokens=12, query_dependent=qd)
            answer = model.generate_text(prepared, max_new_tokens=12)[0]
            found = model.provenance(prepared, answer)
            first = found.passages[0] if found.passages else None
            quoted = first is not None and key in first.text and first.score > 0.5
            passed[mode].append(key in answer and quoted)
            score = f"{first.score:.2f}" if first else "-"
            print(f"{i:2d} {mode:5s} key={key in answer!s:5s} first-passage={quoted!s:5s} score={score} {answer!r}", flush=True)
    print(json.dumps({"adapter": args.adapter, **{mode: f"{sum(v)}/{len(v)}" for mode, v in passed.items()}}))


if __name__ == "__main__":
    main()
