"""Pass keys at one depth and length in the card's repeated filler, through the product path, for several adapters.

    .venv/bin/python experiments/depth_probe.py runs/candidate-r27 lcirc_plugins/adapters/default --tokens 131072 --depth 0

Each text is compressed once per adapter (repeated filler segments are read once: `reusing_segments`) and
answered with the question scoring the memory (QD-LCIRC) and without (LCIRC). Prints each miss and a count per
adapter and path.
"""

from __future__ import annotations

import argparse

import torch

from lcirc_plugins.data.synthetic import derive_seed, passkey
from lcirc_plugins.model import lcirc_model, whole_segments
from lcirc_plugins.model.layer_reader import fold_positions
from lcirc_plugins.model.lcirc_model import LCIRCModel


def whole_runs(p: torch.Tensor) -> list[torch.Tensor]:
    """The row indices of each run of 64 or more consecutive positions in ``p`` [N] (a segment read whole), in order."""
    starts = torch.ones_like(p, dtype=torch.bool)
    starts[1:] = (p[1:] - p[:-1]) != 1
    run = starts.cumsum(0)
    return [at for r in run.unique() if len(at := (run == r).nonzero()[:, 0]) >= 64]


def fold_keeping_whole_spacing(positions: torch.Tensor, horizon: int) -> torch.Tensor:
    """``fold_positions``, except that a segment read whole keeps its tokens one apart: only its nearest token's
    distance is folded, the rest follow it unsqueezed."""
    folded = fold_positions(positions, horizon)
    for b in range(positions.shape[0]):
        p = positions[b]
        for at in whole_runs(p):
            nearest = at[p[at].argmax()]
            folded[b, at] = folded[b, nearest] - (p[nearest] - p[at])
    return folded


def whole_rows_only(*args, **kwargs) -> whole_segments.QuestionRows:
    """``with_whole_segments`` without the stored slots: the question's whole segments are all the answer reads."""
    rows = ORIGINAL_WITH_WHOLE(*args, **kwargs)
    keep = rows.source < 0
    return whole_segments.QuestionRows(rows.features[keep], rows.positions[keep], keep[keep], rows.source[keep])


ORIGINAL_WITH_WHOLE = whole_segments.with_whole_segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapters", nargs="+")
    parser.add_argument("--tokens", type=int, default=131072)
    parser.add_argument("--depth", type=float, default=0.0)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument(
        "--whole-spacing", action="store_true", help="fold whole segments' offsets only (fold_keeping_whole_spacing)"
    )
    parser.add_argument(
        "--whole-near", action="store_true", help="whole segments just before the prompt (LCIRCConfig.whole_near_prompt)"
    )
    parser.add_argument("--whole-only", action="store_true", help="the QD path reads its whole segments alone (whole_rows_only)")
    args = parser.parse_args()
    if args.whole_only:
        whole_segments.with_whole_segments = whole_rows_only
    if args.whole_spacing:
        lcirc_model.fold_positions = fold_keeping_whole_spacing
    for adapter in args.adapters:
        model = LCIRCModel.from_pretrained(adapter, config_overrides={"whole_near_prompt": True} if args.whole_near else None)
        found = {"qd": 0, "no-qd": 0}
        with model.reusing_segments():
            for i in range(args.samples):
                example = passkey(derive_seed(args.seed, i), num_tokens=args.tokens, tokenizer=model.tokenizer, depth=args.depth)
                memory = model.compress(example.context)
                for mode, query_dependent in (("qd", True), ("no-qd", False)):
                    prepared = model.prepare_answer(example.question, memory, max_new_tokens=16, query_dependent=query_dependent)
                    reply = model.generate_text(prepared, max_new_tokens=16)[0]
                    found[mode] += example.answer in reply
                    if example.answer not in reply:
                        print(f"  {adapter} {mode} seed {i}: {reply!r} (key {example.answer})", flush=True)
        print(
            f"{adapter}: {args.tokens} tokens, depth {args.depth}: QD-LCIRC {found['qd']} / LCIRC {found['no-qd']} of {args.samples}",
            flush=True,
        )
        model.injector.detach()


if __name__ == "__main__":
    main()
