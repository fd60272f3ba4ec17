"""Average two adapters of one architecture weight by weight (the "R4 and R5 averaged" row of the findings).

    .venv/bin/python experiments/average_adapters.py runs/default-4-qd/adapter runs/r5-whole/adapter runs/soup-r4-r5

The config is the second adapter's; the weights are (1 - w) * first + w * second (``--weight``, default 0.5).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from lcirc_plugins.model.adapter import WEIGHTS_NAME
from lcirc_plugins.model.config import CONFIG_NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("out")
    parser.add_argument("--weight", type=float, default=0.5)
    args = parser.parse_args()
    a, b = (load_file(Path(d) / WEIGHTS_NAME) for d in (args.first, args.second))
    if a.keys() != b.keys():
        raise SystemExit("the adapters hold different tensors: average adapters of one architecture")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    w = args.weight
    save_file({k: (1 - w) * a[k].float() + w * b[k].float() for k in a}, out / WEIGHTS_NAME, metadata={"format": "pt"})
    shutil.copy(Path(args.second) / CONFIG_NAME, out / CONFIG_NAME)
    print(out)


if __name__ == "__main__":
    main()
