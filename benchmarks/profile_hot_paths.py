"""Where the time goes: torch.profiler over the three hot paths at 128K tokens, written to ``results/profile.md``.

The hot paths are the memory build (``compress``), QD recompression for one question (``memory_for_query``)
and a 64-token answer reading the memory. ``performance.py`` copies the tables into ``RESULTS.md``.

Usage: ``.venv/bin/python benchmarks/profile_hot_paths.py [--tokens 131072] [--rows 12]``
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from performance import NEW_TOKENS, QUESTION, RESULTS_DIR, book_text, chars_for_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=131_072)
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from lcirc_plugins.model.lcirc_model import PreparedPrompt
    from lcirc_plugins.model.loading import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("default")
    text = book_text(chars_for_sizes([args.tokens])[args.tokens])
    memory = model.compress(text)
    features = model.memory_for_query(memory, QUESTION)  # warm-up of every path
    prompt = PreparedPrompt(model.prompt_ids(QUESTION, NEW_TOKENS), features, memory.num_tokens)
    model.generate_text(prompt, max_new_tokens=2, min_new_tokens=2)

    paths = {
        f"memory build ({memory.num_tokens:,} tokens)": lambda: model.compress(text),
        "QD recompression (one question)": lambda: model.memory_for_query(memory, QUESTION),
        f"{NEW_TOKENS}-token answer reading {memory.num_vectors:,} memory vectors": lambda: model.generate_text(
            prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS
        ),
    }
    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads; self CPU time by operator.", ""]
    for title, run in paths.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
        lines += [f"### {title}", "", "```", table.strip(), "```", ""]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "profile.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
