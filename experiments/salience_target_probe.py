"""Offline probe behind the salience target (issue 15): which attention target, temperature and layer make a
linear scorer's top-K (K = L/32 per segment) hold a whole pass key?

    .venv/bin/python experiments/salience_target_probe.py filler --train 300 --held-out 40
    .venv/bin/python experiments/salience_target_probe.py book --train 150 --held-out 30

"filler": pass keys in the standard filler; "book": training keys in three corpus books, held-out keys in
*Treasure Island*. Collecting runs the backbone with eager attention on every example (about 2.4 s each here);
the fits take seconds. Prints the coverage of the target's own top-K and of fitted scorers per variant.
"""

from __future__ import annotations

import argparse
import itertools
import math

import torch

from lcirc_plugins import LCIRCConfig, LCIRCModel
from lcirc_plugins.training.config import TrainConfig
from lcirc_plugins.training.data import ExampleStream
from lcirc_plugins.training.trainer import LCIRCTrainingModule

CORPUS = "@shared/corpus/"
BOOKS = ("austen-emma.txt", "doyle-a-study-in-scarlet.txt", "joyce-dubliners.txt")
HELD_OUT_BOOK = "@shared/books/stevenson-treasure-island.txt"
LAYERS = (8, 12, 15, 16, 20)  # memory layers whose states the scorer may read


def collect(model: LCIRCModel, config: TrainConfig, split: str, count: int) -> list[dict]:
    module, rows = LCIRCTrainingModule(model, config), []
    index = [model.config.gca_layers.index(layer) for layer in LAYERS]
    for ex in itertools.islice(ExampleStream(model.tokenizer, config, split), count):
        key = set(ex.labels[ex.labels != -100][:-1].tolist())
        context = torch.cat(ex.segments, 1)[0]
        c = len(context)
        with torch.no_grad():
            states = torch.cat([model.segment_states(s)[0][:, index] for s in ex.segments]).float()
            _, attention = module.teacher(ex, with_attention=True)
        predicts = ex.labels[1:] != -100
        answer_rows, prompt_rows = predicts.nonzero().squeeze(-1) + c, (~predicts).nonzero().squeeze(-1) + c
        rows.append({
            "states": states, "answer": mean_attention(attention, answer_rows, c), "prompt": mean_attention(attention, prompt_rows, c),
            "key": [i for i, t in enumerate(context.tolist()) if t in key], "lengths": [s.shape[1] for s in ex.segments],
        })
    return rows


def mean_attention(attention: list[torch.Tensor], rows: torch.Tensor, context_len: int) -> torch.Tensor:
    """Mean over layers, heads and ``rows`` of the attention to each context token, [C]."""
    return torch.stack([a[0][:, rows, :context_len].float().mean(dim=(0, 1)) for a in attention]).mean(0)


def target(row: dict, variant: str, temperature: float) -> torch.Tensor:
    mass = row["answer"].clone() if variant == "plain" else (row["answer"] - row["prompt"]).clamp(min=0)
    mass[0] = 0  # the attention sink
    mass = mass ** (1 / temperature)
    return mass / mass.sum().clamp(min=1e-12)


def holds_key(row: dict, scores: torch.Tensor) -> bool:
    kept, offset = set(), 0
    for length in row["lengths"]:
        kept |= set((scores[offset : offset + length].topk(math.ceil(length / 32)).indices + offset).tolist())
        offset += length
    half = len(row["key"]) // 2  # the key is mentioned twice
    return all(p in kept for p in row["key"][:half]) or all(p in kept for p in row["key"][half:])


def fit(train: list[dict], held_out: list[dict], layer: int, variant: str, temperature: float, steps: int) -> float:
    torch.manual_seed(0)
    scorer = torch.nn.Linear(train[0]["states"].shape[-1], 1)
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=1e-3)
    for step in range(steps):
        row = train[step % len(train)]
        goal = target(row, variant, temperature)
        log_q = scorer(row["states"][:, layer]).squeeze(-1).log_softmax(-1)
        loss = (goal * (goal.clamp(min=1e-12).log() - log_q)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return sum(holds_key(r, scorer(r["states"][:, layer]).squeeze(-1)) for r in held_out) / len(held_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting", choices=["filler", "book"])
    parser.add_argument("--train", type=int, default=150)
    parser.add_argument("--held-out", type=int, default=30)
    parser.add_argument("--steps", type=int, nargs="+", default=[600, 1500])
    args = parser.parse_args()
    torch.set_num_threads(2)
    books = ",".join(f"passkey:{CORPUS}{book}" for book in BOOKS)
    data, held_out_data = ("passkey", "passkey") if args.setting == "filler" else (books, f"passkey:{HELD_OUT_BOOK}")
    config = TrainConfig(
        stage="qa", data=f"synthetic:{data}", eval_data=f"synthetic:{held_out_data}", min_train_segment_len=256,
        max_train_segment_len=512, min_segments=1, max_segments=1, salience_distill=1.0,
    )
    adapter = LCIRCConfig(reader="layer", slot_selection=True, tokens_per_slot=32, segment_len=512, max_segment_len=512)
    model = LCIRCModel.from_backbone("smollm2-135m-instruct", adapter)
    train, held_out = collect(model, config, "train", args.train), collect(model, config, "eval", args.held_out)
    for variant in ("plain", "contrast"):
        print(f"{variant}: the target's own top-K holds the key in {sum(holds_key(r, target(r, variant, 1)) for r in held_out) / len(held_out):.0%}")
        for layer, temperature, steps in itertools.product(range(len(LAYERS)), (1.0, 0.25), args.steps):
            print(f"  scorer on layer {LAYERS[layer]}, T = {temperature}, {steps} steps: {fit(train, held_out, layer, variant, temperature, steps):.0%}", flush=True)


if __name__ == "__main__":
    main()
