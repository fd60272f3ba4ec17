#!/usr/bin/env bash
# One command for the performance suite: set up .venv (with the "bench" extra), then measure everything and
# write benchmarks/RESULTS.md and benchmarks/figures/*.png (about 25 minutes on 2 idle cores).
# Run it on a quiet machine: with 2 cores, any other busy process slows torch's threads several-fold.
# Arguments go to benchmarks/performance.py (e.g. --sizes 8192 32768 --no-vector for a quick look).
set -euo pipefail
export LCIRC_EXTRAS="all,test,bench"
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup_env.sh"
exec "$LCIRC_PY" benchmarks/performance.py "$@"
