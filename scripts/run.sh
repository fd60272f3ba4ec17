#!/usr/bin/env bash
# Set up the environment, then run the main job: the Gradio app (upload books, ask questions) with the
# default backbone and adapter, on http://127.0.0.1:7860. Arguments go to `lcirc-app` (see --help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"  # cds to the repo root
echo "[run] lcirc-app $*  (open http://127.0.0.1:7860; Ctrl-C stops it)"
exec .venv/bin/lcirc-app "$@"
