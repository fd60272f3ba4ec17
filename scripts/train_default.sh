#!/usr/bin/env bash
# Reproduce the shipped default adapter from scratch on a CPU (about 4 hours on 2 cores): the layer reader on
# pass keys in one segment (R1), in 1-4 segments of corpus books (R2), then among up to 63 distractor segments
# with a length curriculum gated on held-out answers (R3), then the QD stage on pass keys, needles and invented
# book facts among distractors (R4); then the whole readers: R4 trained to read the question's segments whole
# (R5), R5's readers grafted onto R4 as whole readers in one softmax with the slots, and only those trained,
# among up to 16 and then 63 distractor segments (R12, R13), then on answers in the backbone's own words with
# distillation only where the backbone is right (R17); a bf16 export of it pruned to 9 reading layers, whose slot
# readers (R26) and then whole readers (R27) are retrained with unasked pass keys (decoys) and open questions so
# that a question the memory does not answer leaves it alone; the slot readers once more with continuations of a
# text read past a window (R28: the memory lowers the perplexity the window alone gives); a bf16 export into the
# package; the model card's measured table. Each run resumes from its last checkpoint if interrupted. Arguments go to the card
# measurement (e.g. --samples 20 for a quicker, noisier table).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"  # cds to the repo root
DEST=lcirc_plugins/adapters/default
train() {
  .venv/bin/lcirc-train "configs/$1.json"
  cp "runs/$1/training.png" "$DEST/training-${1#default-}.png"
}
for run in default-1-passkey default-2-books default-3-long default-4-qd default-5-whole; do
  train "$run"
done
.venv/bin/lcirc graft runs/default-4-qd/adapter --whole-from runs/default-5-whole/adapter -o runs/default-6-graft \
  --whole-softmax joint --whole-segments 2
train default-7-joint
train default-8-long-whole
train default-9-own-words
.venv/bin/lcirc export runs/default-9-own-words/adapter -o "$DEST" --dtype bfloat16
# 9 of the 22 reading layers (the answer's cost at 128K tokens), retrained with decoys and open questions
.venv/bin/lcirc prune "$DEST" --keep-layers 8 15 17 18 20 21 22 23 29 -o runs/default-10-pruned
train default-10-open-questions
train default-11-open-questions-whole
.venv/bin/lcirc export runs/default-11-open-questions-whole/adapter -o "$DEST" --dtype bfloat16 --whole-near-prompt
# the slot readers again, half the examples continuing a text past a 896-token window (the card's perplexity)
train default-12-card-continuations
.venv/bin/lcirc export runs/default-12-card-continuations/adapter -o "$DEST" --dtype bfloat16
cp configs/default-adapter-card.md "$DEST/MODEL_CARD.md"
card() {  # one measured section of the card: card OUT_NAME [eval.card arguments]
  local out=$1
  shift
  .venv/bin/python -m lcirc_plugins.eval.card --adapter "$DEST" --out "runs/$out" --card "$DEST/MODEL_CARD.md" "$@"
}
compared=(--systems truncated bm25-rag lcirc-memory qd-lcirc-memory)  # the sections' systems: the baselines and both paths
card card "$@"
card card-perplexity-window --tasks perplexity --systems truncated lcirc qd-lcirc --section perplexity-window "$@"
card card-passkey-8k --tasks passkey --lengths 8192 --samples 50 "${compared[@]}" --section passkey-8k
card card-passkey-32k --tasks passkey --lengths 32768 --samples 50 "${compared[@]}" --section passkey-32k
card card-needle-32k --tasks niah_single --needle-length 32768 --samples 50 "${compared[@]}" --section needle-32k
card card-facts-32k --tasks book_facts --needle-length 32768 --samples 20 "${compared[@]}" --section facts-32k
card card-128k --tasks passkey --lengths 131072 --samples 50 "${compared[@]}" --section 128k
card card-needle-128k --tasks niah_single --needle-length 131072 --samples 5 "${compared[@]}" --section needle-128k
