#!/usr/bin/env bash
# Set up the environment, then run the main job: the Gradio app (upload books, ask questions) with the
# default backbone and adapter, on http://127.0.0.1:7860. Arguments go to `lcirc-app` (see --help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"  # cds to the repo root
# The address to open follows --host/--port (either "--port N" or "--port=N"), as lcirc-app will use them.
host=127.0.0.1 port=7860 previous=""
for arg in "$@"; do
    case "$previous" in --host) host="$arg" ;; --port) port="$arg" ;; esac
    case "$arg" in --host=*) host="${arg#--host=}" ;; --port=*) port="${arg#--port=}" ;; esac
    previous="$arg"
done
[ "$host" = 0.0.0.0 ] && host=127.0.0.1  # listening on every interface: this machine's own address works
echo "[run] lcirc-app $*  (open http://$host:$port; Ctrl-C stops it)"
exec .venv/bin/lcirc-app "$@"
