"""Held-out continuation loss of a training config's adapter, with its text in memory and without, before any step.

The trainer evaluates only after its first steps; this gives the starting point of a run that adds continuations
(``lm_share``): ``python experiments/continuation_probe.py experiments/r28-card-continuations.json --examples 12``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from lcirc_plugins.training.config import TrainConfig
from lcirc_plugins.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("--examples", type=int, default=6)
    args = parser.parse_args()
    trainer = Trainer(TrainConfig(**json.loads(Path(args.config).read_text())))
    trainer.model.eval()
    with torch.no_grad():
        losses = trainer._evaluate_language_modelling(args.examples)
    for name, values in losses.items():
        print(name, round(statistics.fmean(values), 4), [round(v, 3) for v in values])


if __name__ == "__main__":
    main()
