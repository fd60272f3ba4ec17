"""Probe: does the shipped reader read a segment kept whole (all its tokens' states) better than its 16 slots?

For each book-facts (or needle) example: compress the text once, then answer from
  - the stored memory (16 of 512 tokens per segment),
  - the memory with the evidence's segment kept whole (oracle),
  - the memory with the BM25 top-k segments for the question kept whole.

    .venv/bin/python experiments/refine_probe.py lcirc_plugins/adapters/default --task book_facts --tokens 8192 --samples 6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lcirc_plugins.data.shared import shared_data_dir
from lcirc_plugins.data.synthetic import NEEDLE_TASKS, TASKS, derive_seed
from lcirc_plugins.model.loading import load_model
from lcirc_plugins.model.memory import MemoryRows
from lcirc_plugins.model.passages import rank_passages

BOOK = shared_data_dir() / "books" / "stevenson-treasure-island.txt"


def refined_rows(model, memory, segments: list[int], question: str, skip_first: bool, keep_slots: bool = False) -> MemoryRows:
    """The memory's rows with ``segments`` replaced by (or, with ``keep_slots``, added beside) every token's states."""
    L = memory.segment_len
    keep = torch.ones(memory.num_vectors, dtype=torch.bool) if keep_slots else ~torch.isin(memory.segment_of_rows(), torch.tensor(segments))
    feats, pos = [memory.features[keep]], [memory.positions[keep]]
    for s in segments:
        ids = memory.token_ids[s * L : (s + 1) * L].long()
        states = model.segment_states(ids[None])[0].float().cpu()  # (L, M, d)
        start = 1 if skip_first else 0
        feats.append(states[start:])
        pos.append(torch.arange(start, len(ids)).float() + s * L)
    features, positions = torch.cat(feats), torch.cat(pos)
    order = positions.argsort()
    features, positions = features[order], positions[order]
    bias = model.question_bias(features[None, :, 0], question)
    rows = MemoryRows(features, positions - memory.num_tokens, memory.num_tokens, None if bias is None else bias[0].float().cpu())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("adapter")
    parser.add_argument("--task", default="book_facts", choices=[*NEEDLE_TASKS, "book_facts"])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--top_k", type=int, default=2)
    parser.add_argument("--skip_first", action="store_true")
    parser.add_argument("--keep_slots", action="store_true", help="add the whole segments beside their kept tokens")
    args = parser.parse_args()
    model = load_model(args.adapter)
    text = Path(BOOK).read_text(encoding="utf-8-sig")
    source = {"book": text} if args.task == "book_facts" else {"haystack": text}
    hits: dict[str, int] = {}
    for i in range(args.samples):
        example = TASKS[args.task](derive_seed(2026, i), num_tokens=args.tokens, tokenizer=model.tokenizer, **source)
        memory = model.compress(example.context)
        start = example.evidence_spans[0][0]
        oracle = int(((memory.spans[:, 0] <= start) & (start < memory.spans[:, 1])).nonzero()[0, 0])
        top = [p.segment for p in rank_passages(memory, model.tokenizer, example.question, args.top_k)]
        line = f"{i} depth {example.depth:.2f} answer {example.answer!r} oracle {oracle} bm25 {top}"
        variants = {
            "stored": model.read_memories([memory], example.question),
            "oracle": refined_rows(model, memory, [oracle], example.question, args.skip_first, args.keep_slots),
            f"bm25-{args.top_k}": refined_rows(model, memory, sorted(top), example.question, args.skip_first, args.keep_slots),
        }
        for name, rows in variants.items():
            t = time.perf_counter()
            ids = model.prompt_ids(example.question, 24)
            out = model.generate(ids, memory=rows, max_new_tokens=24, do_sample=False)
            reply = model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
            ok = any(a.lower() in reply.lower() for a in example.answers)
            hits[name] = hits.get(name, 0) + ok
            line += f"\n   {name:8s} {'ok ' if ok else 'MISS'} {reply!r} ({time.perf_counter() - t:.1f}s)"
        print(line, flush=True)
    print(hits)


if __name__ == "__main__":
    main()
