"""How strongly does each layer's memory match what reads it? The log-sum-exp of the memory logits per layer and
head, at continuation tokens (the card's perplexity: window + memory) and at a pass-key question's last prompt token.

    .venv/bin/python experiments/sink_probe.py lcirc_plugins/adapters/default --tokens 8192

Why: the layer reader adds its read through a softmax over the memory alone, so every token reads something. A
learned sink logit (softmax with a null row) lets a token read nothing; its starting value should sit below the
question's log-sum-exp and near the continuation's.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from product_path_eval import BOOK

from lcirc_plugins.data.synthetic import TASKS, derive_seed
from lcirc_plugins.eval.systems import LCIRCSystem
from lcirc_plugins.model import layer_reader
from lcirc_plugins.model.loading import load_model

RECORDED: list[torch.Tensor] = []
_scores = layer_reader.LayerReader._scores


def _recording(self, hidden, memory_kv, memory_mask, rotary, bias):  # type: ignore[no-untyped-def]
    scores, shape = _scores(self, hidden, memory_kv, memory_mask, rotary, bias)
    b, h, t, _ = shape
    RECORDED.append(scores.logsumexp(-1).reshape(b, h, t)[0].detach())  # [H, T]
    return scores, shape


def _summary(name: str, rows: list[torch.Tensor]) -> None:
    per_layer = [r.float() for r in rows]
    means = [float(r.mean()) for r in per_layer]
    print(f"{name}: mean lse per layer {[round(m, 1) for m in means]}")
    print(f"{name}: overall median {statistics.median(float(x) for r in per_layer for x in r.flatten()):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--tokens", type=int, default=8192)
    args = parser.parse_args()
    model = load_model(args.adapter)
    layer_reader.LayerReader._scores = _recording
    text = Path(BOOK).read_text(encoding="utf-8-sig")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"][5000 : 5000 + args.tokens]
    system = LCIRCSystem(model, use_query=False)
    RECORDED.clear()
    nll = system.nll(ids[:-128], ids[-128:])
    _summary(f"continuation (nll {nll:.3f})", [r[:, -128:] for r in RECORDED])
    example = TASKS["passkey"](derive_seed(2026, 0), num_tokens=args.tokens, tokenizer=model.tokenizer, haystack=text)
    memory = model.compress(example.context)
    for qd in (False, True):
        prepared = model.prepare_answer(example.question, memory, max_new_tokens=8, query_dependent=qd)
        RECORDED.clear()
        with torch.no_grad():
            model(prepared.input_ids, memory=prepared.rows)
        _summary(f"pass key question, qd={qd}", [r[:, -1:] for r in RECORDED])


if __name__ == "__main__":
    main()
