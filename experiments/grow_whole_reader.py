"""Grow an adapter a whole reader that starts as a copy of its slot reader (R9, R10 in the findings' "second reader").

    .venv/bin/python experiments/grow_whole_reader.py runs/default-4-qd/adapter runs/r9-init --beside
    .venv/bin/python experiments/grow_whole_reader.py runs/default-4-qd/adapter runs/r10-init
    .venv/bin/python experiments/grow_whole_reader.py runs/default-4-qd/adapter runs/r4-r5 --whole_from runs/default-5-whole/adapter

``LCIRCConfig(whole_reader=True)`` adds whole readers with closed gates (R8); this copies each layer's slot-reader
deltas and gate into its whole reader instead, so training starts from the slot reader reading whole segments in
their own softmax, beside the slots. The slot readers are unchanged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from lcirc_plugins.model.adapter import WEIGHTS_NAME
from lcirc_plugins.model.config import CONFIG_NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("out")
    parser.add_argument("--whole_segments", type=int, default=2)
    parser.add_argument("--beside", action="store_true", help="keep a whole segment's slots beside its whole rows (R9)")
    parser.add_argument("--whole_from", default=None, help="copy the whole readers from this adapter's slot readers instead (e.g. R5's)")
    args = parser.parse_args()
    source = Path(args.adapter)
    weights = load_file(source / WEIGHTS_NAME)
    copies = {}
    for name, tensor in (load_file(Path(args.whole_from) / WEIGHTS_NAME) if args.whole_from else weights).items():
        layer, _, rest = name.partition(".")[2].partition(".")  # gca.<layer>.<rest>
        if name.startswith("gca.") and (rest.startswith("lora.") or rest == "attn_gate"):
            copies[f"gca.{layer}.whole.{rest}"] = tensor.clone()
    config = json.loads((source / CONFIG_NAME).read_text())
    config.update(whole_segments=args.whole_segments, whole_reader=True, whole_beside=args.beside)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({**weights, **copies}, out / WEIGHTS_NAME, metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    print(f"{out}: {len(copies)} tensors copied into whole readers")


if __name__ == "__main__":
    main()
