"""Uniform sink logits added to a trained adapter, untrained: the final window's loss (window + memory, as the card's
"perplexity with the final window") and pass keys through the product path, by sink value. Each text is compressed
once; the sinks (read-side only) are set in place between readings.

    .venv/bin/python experiments/sink_sweep.py lcirc_plugins/adapters/default --tokens 8192 --sinks none 4 6 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from product_path_eval import BOOK

from lcirc_plugins.data.synthetic import TASKS, derive_seed
from lcirc_plugins.eval.systems import LCIRCSystem, TruncatedBackbone
from lcirc_plugins.model.lcirc_model import LCIRCModel


def set_sinks(model: LCIRCModel, value: str) -> None:
    """``none``: a sink no row loses to (-1e4, the reader without sinks); a number: that logit on every head."""
    with torch.no_grad():
        for block in model.adapter.gca.values():
            block.attn_sink.fill_(-1e4 if value == "none" else float(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--sinks", nargs="+", default=["none", "4", "6", "8"])
    parser.add_argument("--ppl-samples", type=int, default=3)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--start", type=int, default=20, help="first key's index (product_path_eval's --start)")
    parser.add_argument("--task", default="passkey")
    args = parser.parse_args()
    model = LCIRCModel.from_pretrained(args.adapter, config_overrides={"memory_sink": -1e4})
    text = Path(BOOK).read_text(encoding="utf-8-sig")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    stride = (len(ids) - args.tokens - 3000) // max(args.ppl_samples, 1)
    pieces = [ids[3000 + i * stride : 3000 + i * stride + args.tokens] for i in range(args.ppl_samples)]
    truncated = TruncatedBackbone(model)
    print("truncated nll", [round(truncated.nll(p[:-128], p[-128:]), 3) for p in pieces], flush=True)
    system = LCIRCSystem(model, use_query=False)
    nll: dict[str, list[float]] = {s: [] for s in args.sinks}
    for piece in pieces:
        context, target = piece[:-128], piece[-128:]
        keep = system.window - len(target)
        rows = model.compress_ids(torch.tensor(context[:-keep]))
        for sink in args.sinks:
            set_sinks(model, sink)
            nll[sink].append(round(system._score(context[-keep:] + target, len(target), rows), 3))
    found = {(s, qd): 0 for s in args.sinks for qd in (False, True)}
    for i in range(args.keys):
        example = TASKS[args.task](derive_seed(2026, args.start + i), num_tokens=args.tokens, tokenizer=model.tokenizer, haystack=text)
        memory = model.compress(example.context)
        for sink in args.sinks:
            set_sinks(model, sink)
            memory.adapter_fingerprint = model.adapter_fingerprint  # same compressor: the sinks are read-side only
            for qd in (False, True):  # the card measures both: a sink can keep QD's keys and lose LCIRC's
                prepared = model.prepare_answer(example.question, memory, max_new_tokens=24, query_dependent=qd)
                found[sink, qd] += example.answer in model.generate_text(prepared, max_new_tokens=24)[0]
    for sink in args.sinks:
        mean = sum(nll[sink]) / max(len(nll[sink]), 1)
        print(
            f"sink {sink}: lcirc nll {nll[sink]} (mean {mean:.3f}) {args.task} "
            f"lcirc {found[sink, False]}/{args.keys} qd-lcirc {found[sink, True]}/{args.keys}",
            flush=True,
        )


if __name__ == "__main__":
    main()
