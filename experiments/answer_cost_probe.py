"""Answer cost with a stored 128K memory, to iterate on the readers' decoding speed without rebuilding the book.

    python experiments/answer_cost_probe.py runs/book-128k.lcirc-memory [--tokens 131072] [--repeats 3] [--profile]
        [--close 12 13 ...]  (those layers' readers not run: what an adapter reading fewer layers would cost)

Builds the memory once (the same book text as ``benchmarks/layer_reader_cost.py``) and saves it at the given path;
later runs load it. Times a 64-token greedy answer on the product path (``prepare_answer``: the question's whole
segments read beside the slots; the memory's keys and values projected once, with it, and rotated per answer)
against the window alone, interleaved, and the same answer with every layer's keys and values already rotated and
laid out for reading (what the per-answer preparation costs); ``--profile`` prints torch.profiler's operator table
for one answer with memory. The benchmark of record stays ``benchmarks/layer_reader_cost.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from performance import NEW_TOKENS, QUESTION, book_text, chars_for_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("memory", type=Path)
    parser.add_argument("--tokens", type=int, default=131_072)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--close", type=int, nargs="*", default=[], help="decoder layers whose readers do not run (their hooks removed)")
    args = parser.parse_args()

    import torch

    from lcirc_plugins import CompressedMemory
    from lcirc_plugins.model.loading import load_model

    model = load_model("default")
    for layer, handle in zip(sorted(model.injector.blocks), model.injector._handles):
        if layer in args.close:  # what an adapter without these layers' readers costs (layer_drop_probe.py)
            handle.remove()
    memory = CompressedMemory.load(args.memory) if args.memory.exists() else None
    if memory is None or memory.adapter_fingerprint != model.adapter_fingerprint:  # none yet, or another adapter's
        memory = model.compress(book_text(chars_for_sizes([args.tokens])[args.tokens]))
        memory.save(args.memory)
    start = time.perf_counter()
    prepared = model.prepare_answer(QUESTION, memory, max_new_tokens=NEW_TOKENS)
    print(f"question step {time.perf_counter() - start:.2f} s; rows {prepared.rows.features.shape[0]}", flush=True)

    def answer(rows: object) -> float:
        begin = time.perf_counter()
        model.generate(prepared.input_ids, memory=rows, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        return time.perf_counter() - begin

    answer(prepared.rows)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            answer(prepared.rows)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    def answer_projected() -> float:
        """The answer with the memory's keys/values already rotated and laid out: one forward in the same conditioning
        prepares them."""
        with model.injector.conditioned(*model.memory_states(prepared.rows)):
            model.backbone(input_ids=prepared.input_ids[:, :1])
            begin = time.perf_counter()
            model.backbone.generate(
                input_ids=prepared.input_ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                pad_token_id=model.tokenizer.eos_token_id,
            )
            return time.perf_counter() - begin

    times: dict[str, list[float]] = {"memory": [], "projected": [], "window": []}
    for _ in range(args.repeats):
        times["memory"].append(answer(prepared.rows))
        times["projected"].append(answer_projected())
        times["window"].append(answer(None))
    memory_s, projected_s, window_s = (statistics.median(times[k]) for k in ("memory", "projected", "window"))
    print(
        f"answer: memory {memory_s:.2f} s ({memory_s / window_s:.2f}x), keys/values prepared beforehand "
        f"{projected_s:.2f} s ({projected_s / window_s:.2f}x), window {window_s:.2f} s ({torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
