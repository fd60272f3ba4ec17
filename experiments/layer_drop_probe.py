"""Which memory layers the shipped adapter can do without: its readers closed layer by layer, no training.

    .venv/bin/python experiments/layer_drop_probe.py lcirc_plugins/adapters/default --out runs/layer-drop.json

Why: at 128K tokens the answer reads the memory at 22 layers and costs about 2x the window alone; the readers' work
per decoded token is fixed per layer (findings, "What answering costs with the shipped adapter"), so 1.5x needs
fewer reading layers. Closing a layer's readers (both gates at 0) reads exactly as an adapter without them.

Each example (pass keys and needles at 8K and 32K tokens of *Treasure Island*, card-like seeds from 20 on) is
compressed once and prepared once per path (QD-LCIRC with the question, LCIRC without); the full adapter's greedy
reply is the reference where it holds the answer. A set of closed layers is scored by the mean NLL of the
references' answer tokens (teacher-forced, per path) and the final window's loss with the rest of a 8K piece in
memory (the card's perplexity setting). Stage 1 closes each layer alone; stage 2 closes the layers that cost least,
cumulatively, and re-generates every answer for each count.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from product_path_eval import BOOK

from lcirc_plugins.data.synthetic import TASKS, derive_seed
from lcirc_plugins.eval.systems import LCIRCSystem, TruncatedBackbone
from lcirc_plugins.model.lcirc_model import LCIRCModel, PreparedPrompt

EXAMPLES = [("passkey", 8192, None, 6), ("niah_single", 8192, None, 4), ("passkey", 32768, (0.0, 0.25, 0.5), 3), ("niah_single", 32768, (0.1, 0.6), 2)]


def close_layers(model: LCIRCModel, gates: dict[str, tuple[float, float]], closed: set[int]) -> None:
    """Both readers' gates of ``closed`` layers at 0 (reads nothing), every other layer's as trained."""
    with torch.no_grad():
        for name, block in model.adapter.gca.items():
            slots, whole = (0.0, 0.0) if int(name) in closed else gates[name]
            block.attn_gate.fill_(slots)
            block.whole.attn_gate.fill_(whole)


def answer_nll(model: LCIRCModel, prepared: PreparedPrompt, target: list[int], answer_from: int) -> float:
    """Mean NLL of ``target[answer_from:]`` after the prompt and ``target[:answer_from]`` (teacher-forced)."""
    ids = torch.cat([prepared.input_ids, torch.tensor([target])], dim=1)
    labels = torch.full_like(ids, -100)
    start = prepared.input_ids.shape[1] + answer_from
    labels[0, start:] = ids[0, start:]
    with torch.no_grad():
        return float(model(ids, memory=prepared.rows, labels=labels).loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--out", type=Path, default=Path("runs/layer-drop.json"))
    parser.add_argument("--counts", type=int, nargs="+", default=[4, 7, 10, 13])
    parser.add_argument("--ppl-samples", type=int, default=2)
    parser.add_argument("--keep", nargs="*", help="instead of the sweep: comma-separated sets of layers left reading, e.g. 8,15,18")
    args = parser.parse_args()
    started = time.perf_counter()
    model = LCIRCModel.from_pretrained(args.adapter)
    gates = {n: (float(b.attn_gate), float(b.whole.attn_gate)) for n, b in model.adapter.gca.items()}
    layers = sorted(int(n) for n in gates)
    tok = model.tokenizer
    text = Path(BOOK).read_text(encoding="utf-8-sig")

    cases = []  # (example, prepared per path)
    for task, tokens, depths, count in EXAMPLES:
        for i in range(count):
            depth = None if depths is None else depths[i]
            example = TASKS[task](derive_seed(2026, 20 + i), num_tokens=tokens, tokenizer=tok, haystack=text, depth=depth)
            memory = model.compress(example.context)
            prepared = {qd: model.prepare_answer(example.question, memory, max_new_tokens=24, query_dependent=qd) for qd in (True, False)}
            cases.append((f"{task}-{tokens}-{i}", example, prepared))
            print(f"prepared {cases[-1][0]} ({time.perf_counter() - started:.0f} s)", flush=True)

    def found() -> dict[bool, int]:
        hits = {True: 0, False: 0}
        for _, example, prepared in cases:
            for qd, p in prepared.items():
                hits[qd] += example.answer in model.generate_text(p, max_new_tokens=24)[0]
        return hits

    references = []  # (prepared prompt, qd, target ids, index of the answer's first token)
    for _, example, prepared in cases:
        for qd, p in prepared.items():
            reply = model.generate_text(p, max_new_tokens=24)[0]
            if example.answer in reply:
                start = reply.index(example.answer)
                before = len(tok(reply[:start], add_special_tokens=False)["input_ids"])
                references.append((p, qd, tok(reply[: start + len(example.answer)], add_special_tokens=False)["input_ids"], before))
    print(f"{len(references)} references of {2 * len(cases)} answers", flush=True)

    ids = tok(text, add_special_tokens=False)["input_ids"]
    stride = (len(ids) - 8192 - 3000) // args.ppl_samples
    system = LCIRCSystem(model, use_query=False)
    pieces = []
    for s in range(args.ppl_samples):
        piece = ids[3000 + s * stride : 3000 + s * stride + 8192]
        keep = system.window - 128
        pieces.append((piece[-keep - 128 :], model.compress_ids(torch.tensor(piece[: -keep - 128]))))

    def score(closed: set[int]) -> dict[str, float]:
        close_layers(model, gates, closed)
        by_path = {qd: [answer_nll(model, p, t, a) for p, qd2, t, a in references if qd2 == qd] for qd in (True, False)}
        ppl = [system._score(window, 128, rows) for window, rows in pieces]
        return {"qd": sum(by_path[True]) / len(by_path[True]), "lcirc": sum(by_path[False]) / len(by_path[False]), "window": sum(ppl) / len(ppl)}

    truncated = TruncatedBackbone(model)
    print("truncated window nll", sum(truncated.nll(w[:-128], w[-128:]) for w, _ in pieces) / len(pieces), flush=True)
    if args.keep:
        results = {}
        for kept in args.keep:
            closed = set(layers) - {int(i) for i in kept.split(",")}
            results[kept] = {**score(closed), **{f"found_{'qd' if qd else 'lcirc'}": n for qd, n in found().items()}}
            print(f"keep {kept}: {results[kept]} ({time.perf_counter() - started:.0f} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        return
    results: dict = {"references": len(references), "full": score(set()), "single": {}, "cumulative": {}}
    results["full"].update({"found_qd": sum(qd for _, qd, _, _ in references), "found_lcirc": sum(not qd for _, qd, _, _ in references)})
    print("full", results["full"], flush=True)
    for layer in layers:
        results["single"][layer] = score({layer})
        print(f"close {layer}: {results['single'][layer]} ({time.perf_counter() - started:.0f} s)", flush=True)
    base = results["full"]
    cost = {layer: (r["qd"] - base["qd"]) + (r["lcirc"] - base["lcirc"]) for layer, r in results["single"].items()}
    order = sorted((layer for layer in layers if layer != model.config.salience_layer), key=cost.get)
    results["order"] = order
    for count in args.counts:
        closed = set(order[:count])
        entry = score(closed)
        hits = found()
        entry.update({"closed": sorted(closed), "found_qd": hits[True], "found_lcirc": hits[False], "of": len(cases)})
        results["cumulative"][count] = entry
        print(f"close {count}: {entry} ({time.perf_counter() - started:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
