#!/usr/bin/env bash
# Reproduce the shipped default adapter from scratch on a CPU: stage 1 (LCIRC, long text), stage 2 (QD, synthetic
# retrieval and book QA), a bf16 export into the package, and the model card's measured table.
# Each stage resumes from its last checkpoint if interrupted. Arguments go to the card measurement
# (e.g. --samples 20 for a quicker, noisier table).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"  # cds to the repo root
DEST=lcirc_plugins/adapters/default
.venv/bin/lcirc-train configs/stage1-smollm2.json
.venv/bin/lcirc-train configs/stage2-smollm2.json
.venv/bin/lcirc export runs/stage2-smollm2/adapter -o "$DEST" --dtype bfloat16
cp configs/default-adapter-card.md "$DEST/MODEL_CARD.md"
cp runs/stage1-smollm2/training.png "$DEST/training-stage1.png"
cp runs/stage2-smollm2/training.png "$DEST/training-stage2.png"
.venv/bin/python -m lcirc_plugins.eval.card --adapter "$DEST" --out runs/card --card "$DEST/MODEL_CARD.md" "$@"
