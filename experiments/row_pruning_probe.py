"""Reading fewer memory rows per decoded token: what the answer keeps and what it saves (SnapKV-style, not shipped).

    python experiments/row_pruning_probe.py --keep 512 1024 [--samples 1] [--length 32768] [--timing runs/book-128k.lcirc-memory]

Why (docs/TRAINING_FINDINGS.md, "What answering costs with the shipped adapter"): every decoded token reads all of a
memory's rows at every reader, and at this machine's memory bandwidth that alone is about a third of the window's
own answer time at 128K tokens. Here each reader reads every row for the prompt, as the product does, keeps the
``--keep`` rows (slots and whole rows together) the prompt's tokens attended to most at that layer, and reads only
those for every decoded token. Run on the product path (``LCIRCModel.answer``) with the shipped adapter: accuracy on
the model card's pass keys (filler) and needles (held-out books) at ``--length`` tokens, one sample per depth per
``--samples``, beside the full read; with ``--timing`` a stored 128K-token memory (as ``answer_cost_probe.py``
builds) times a 64-token answer with every ``--keep`` against the full read and the window alone.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
CARD_SEED = 1234  # python -m lcirc_plugins.eval.card's default --seed


@contextlib.contextmanager
def read_top_rows(keep: int) -> Iterator[None]:
    """Within this block, each joint layer reader reads all rows for a prompt of several tokens and afterwards only
    the ``keep`` rows that prompt attended to most (summed over heads and tokens), until the next prompt."""
    from lcirc_plugins.model.injection import _ACTIVE
    from lcirc_plugins.model.layer_reader import JointRows, LayerReader, WholeRows

    full_read = LayerReader.forward

    def forward(self, hidden, memory_kv, memory_mask=None, rotary=None, bias=None, whole=None, merged=None):
        state = _ACTIVE.get()
        if keep <= 0 or whole is None or not self.joint_softmax or state is None or hidden.shape[0] != 1:
            return full_read(self, hidden, memory_kv, memory_mask, rotary, bias, whole, merged)
        kept = state.__dict__.setdefault("kept_rows", {})
        if hidden.shape[1] > 1 or id(self) not in kept:  # the prompt: read everything, remember what it read most
            with torch.no_grad():
                (slot_probs, _), (whole_probs, _) = self.joint_probs(hidden, memory_kv, memory_mask, rotary, bias, whole)
            mass = torch.cat([slot_probs, whole_probs], dim=-1).sum(dim=(0, 1, 2))
            rows = mass.topk(min(keep, mass.numel())).indices.sort().values
            slots, num_slots = rows[rows < slot_probs.shape[-1]], slot_probs.shape[-1]
            wholes = rows[rows >= num_slots] - num_slots
            joint = whole.joint.logits[..., rows] if whole.joint is not None else None
            kept[id(self)] = (
                (memory_kv[0][..., slots], memory_kv[1][:, :, slots]),
                WholeRows((whole.kv[0][..., wholes], whole.kv[1][:, :, wholes]), None, None, None if joint is None else JointRows(joint, None)),
            )
            return full_read(self, hidden, memory_kv, memory_mask, rotary, bias, whole, merged)
        slots_kv, whole_rows = kept[id(self)]
        return full_read(self, hidden, slots_kv, None, rotary, None, whole_rows, merged)

    LayerReader.forward = forward
    try:
        yield
    finally:
        LayerReader.forward = full_read


def accuracy(model, keeps: list[int], length: int, samples: int) -> None:
    from lcirc_plugins.data import synthetic
    from lcirc_plugins.data.shared import shared_data_dir
    from lcirc_plugins.eval.metrics import substring_match

    books = synthetic.load_haystack(shared_data_dir() / "books")
    hits = {keep: 0 for keep in [0, *keeps]}
    total = 0
    for task, haystack in (("passkey", {}), ("niah_single", {"haystack": books})):
        for sample in range(samples):
            for i, depth in enumerate(DEPTHS):
                seed = (CARD_SEED * 10_000 + sample) * 1_000_003 + i  # the model card's example `sample` at this depth
                example = synthetic.NEEDLE_TASKS[task](seed, num_tokens=length, tokenizer=model.tokenizer, depth=depth, **haystack)
                memory = model.compress(example.context)
                total += 1
                for keep in hits:
                    with read_top_rows(keep):
                        answer = model.answer(example.question, memory, max_new_tokens=16)
                    hit = substring_match(answer, example.answers, example.metadata.get("match", "any"))
                    hits[keep] += int(hit)
                    print(f"{task} depth {depth} keep {keep or 'all'}: {answer!r} ({'right' if hit else 'wrong'})", flush=True)
    for keep, n in hits.items():
        print(f"keep {keep or 'all rows'}: {n} of {total} right")


def timing(model, path: Path, keeps: list[int], repeats: int) -> None:
    from performance import NEW_TOKENS, QUESTION

    from lcirc_plugins import CompressedMemory

    memory = CompressedMemory.load(path)
    prepared = model.prepare_answer(QUESTION, memory, max_new_tokens=NEW_TOKENS)

    def answer(rows, keep: int) -> float:
        with read_top_rows(keep):
            begin = time.perf_counter()
            model.generate(prepared.input_ids, memory=rows, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
            return time.perf_counter() - begin

    answer(prepared.rows, 0)
    times: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleaved
        for keep in [0, *keeps]:
            times.setdefault(f"keep {keep or 'all'}", []).append(answer(prepared.rows, keep))
        times.setdefault("window", []).append(answer(None, 0))
    window = statistics.median(times["window"])
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.2f} s ({statistics.median(values) / window:.2f}x the window)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=int, nargs="+", default=[1024])
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--length", type=int, default=32768)
    parser.add_argument("--timing", type=Path, help="a stored 128K-token memory (answer_cost_probe.py builds one)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from lcirc_plugins.model.loading import load_model

    model = load_model("default")
    if args.timing:
        timing(model, args.timing, args.keep, args.repeats)
    if args.samples:
        accuracy(model, args.keep, args.length, args.samples)


if __name__ == "__main__":
    main()
