"""Do far memory slots fail because their RoPE distance exceeds what the backbone was trained on?

    .venv/bin/python experiments/position_horizon_probe.py lcirc_plugins/adapters/default --tokens 32768 --samples 8

Compresses each pass-key haystack once (Treasure Island, seeds derive_seed(2026, i), as the default test), then
answers from the same memory under several maps of the slots' relative positions:

- ``real``: the positions as stored (a key at depth 0.1 of 32K sits ~29K tokens before the question);
- ``fold-H``: the product's ``fold_positions`` (``LCIRCConfig.position_horizon``): exact within H/3 tokens of the
  prompt, beyond that distances are divided by the factor that brings the farthest slot to H (SelfExtend-style
  grouping; nothing changes when the memory is shorter than H);
- ``scale-H``: every distance scaled by H / span when the span exceeds H (position interpolation).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable

import torch

from lcirc_plugins.data.shared import shared_data_dir
from lcirc_plugins.data.synthetic import derive_seed, passkey
from lcirc_plugins.model.layer_reader import fold_positions
from lcirc_plugins.model.loading import load_model

BOOK = shared_data_dir() / "books" / "stevenson-treasure-island.txt"
PositionMap = Callable[[torch.Tensor], torch.Tensor]


def scale(horizon: float) -> PositionMap:
    def mapped(positions: torch.Tensor) -> torch.Tensor:
        farthest = float((-positions).max())
        return positions if farthest <= horizon else positions * (horizon / farthest)

    return mapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    model = load_model(args.adapter)
    model.config.position_horizon = 0  # the maps below see the stored positions
    book = BOOK.read_text(encoding="utf-8-sig")
    maps: dict[str, PositionMap] = {
        "real": lambda p: p,
        **{f"fold-{h}": functools.partial(fold_positions, horizon=h) for h in (4096, 6144, 8192)},
        "scale-6144": scale(6144),
    }
    original = model.memory_states
    found = {name: 0 for name in maps}
    for i in range(args.samples):
        example = passkey(derive_seed(2026, i), num_tokens=args.tokens, tokenizer=model.tokenizer, haystack=book)
        started = time.perf_counter()
        memory = model.compress(example.context)
        built = time.perf_counter() - started
        for name, position_map in maps.items():
            def patched(m, _map=position_map):
                batch = original(m)
                return batch._replace(positions=None if batch.positions is None else _map(batch.positions))

            model.memory_states = patched
            reply = model.answer(example.question, memory, max_new_tokens=16)
            model.memory_states = original
            hit = example.answer in reply
            found[name] += hit
            print(f"{i:2d} depth {example.depth:.2f} {name:18s} {'ok ' if hit else 'MISS'} {reply!r}", flush=True)
        print(f"   built in {built:.0f} s", flush=True)
    print(json.dumps({"tokens": args.tokens, "samples": args.samples, "found": found}))


if __name__ == "__main__":
    main()
