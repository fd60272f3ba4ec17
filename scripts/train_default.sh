#!/usr/bin/env bash
# Reproduce the shipped default adapter from scratch on a CPU (about 2 hours on 2 cores): the layer reader on
# pass keys in one segment (R1), in 1-4 segments of corpus books (R2), then among up to 63 distractor segments
# with a length curriculum gated on held-out answers (R3), then the QD stage on pass keys, needles and invented
# book facts among distractors (R4); a bf16 export into the package; the model card's measured table. Each run resumes from its last checkpoint if interrupted. Arguments go to the card
# measurement (e.g. --samples 20 for a quicker, noisier table).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"  # cds to the repo root
DEST=lcirc_plugins/adapters/default
RUNS=(default-1-passkey default-2-books default-3-long default-4-qd)
for run in "${RUNS[@]}"; do
  .venv/bin/lcirc-train "configs/$run.json"
done
.venv/bin/lcirc export "runs/${RUNS[-1]}/adapter" -o "$DEST" --dtype bfloat16
cp configs/default-adapter-card.md "$DEST/MODEL_CARD.md"
for run in "${RUNS[@]}"; do
  cp "runs/$run/training.png" "$DEST/training-${run#default-}.png"
done
.venv/bin/python -m lcirc_plugins.eval.card --adapter "$DEST" --out runs/card --card "$DEST/MODEL_CARD.md" "$@"
