"""Held-out evaluation of a trained adapter on another setting, without training (e.g. rung R2).

    .venv/bin/python experiments/evaluate_adapter.py CONFIG.json --init_adapter=runs/default-1-passkey/adapter \
        --data=synthetic:passkey:../shared/data/books/stevenson-treasure-island.txt --min_segments=2 --max_segments=8

Prints the trainer's held-out metrics (own / other / no memory loss, exact answers) as one JSON line.
"""

from __future__ import annotations

import json
import sys

from lcirc_plugins.training.config import TrainConfig
from lcirc_plugins.training.trainer import Trainer


def main() -> None:
    config = TrainConfig.from_file_and_overrides(sys.argv[1], [*sys.argv[2:], "--resume=false"])
    print(json.dumps(Trainer(config).evaluate()))


if __name__ == "__main__":
    main()
