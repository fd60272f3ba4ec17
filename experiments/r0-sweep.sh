#!/usr/bin/env bash
# Rung R0 (experiments/r0-passkey.json) with one setting changed per run, 100 steps each: the LoRA rank of the
# copied readers (0 = the pure copy: only the gates train), the learning rate, and examples per update.
# Results: runs/r0-sweep-*/metrics.jsonl (held-out own / other memory loss, exact and contained keys).
set -euo pipefail
cd "$(dirname "$0")/.."
ADAPTER='"reader": "layer", "tokens_per_slot": 1, "gate_init": 0.1, "segment_len": 128, "max_segment_len": 128, "window": 1024'
run() {  # name, then overrides
  local name=$1; shift
  .venv/bin/lcirc-train experiments/r0-passkey.json --steps=100 --eval_every=100 --save_every=100 \
    --output_dir="runs/r0-sweep-$name" "$@"
}
jobs=("$@")
[ ${#jobs[@]} -eq 0 ] && jobs=(rank0 rank32 lr1e-3 accum4)
for job in "${jobs[@]}"; do
  case $job in
    rank0) run rank0 --adapter="{$ADAPTER, \"lora_rank\": 0}" ;;
    rank32) run rank32 --adapter="{$ADAPTER, \"lora_rank\": 32}" ;;
    lr1e-3) run lr1e-3 --lr=1e-3 ;;
    accum4) run accum4 --grad_accum=4 ;;
  esac
done
