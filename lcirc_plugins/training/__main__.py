"""``lcirc-train`` / ``python -m lcirc_plugins.training``: one command for every stage and device.

Usage: lcirc-train [CONFIG.json] [--key=value ...]; multi-GPU/multi-node: accelerate launch -m lcirc_plugins.training ...
"""

from __future__ import annotations

import sys

from ..errors import LCIRCError
from .config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        from dataclasses import fields

        print(__doc__)
        for f in fields(TrainConfig):
            print(f"  --{f.name}=...  {f.metadata.get('help', '')}")
        return 0
    preset = args.pop(0) if args and not args[0].startswith("--") else None
    try:
        config = TrainConfig.from_file_and_overrides(preset, args)
        from .trainer import Trainer

        final = Trainer(config).train()
    except LCIRCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"adapter saved to {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
