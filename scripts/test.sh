#!/usr/bin/env bash
# Set up the environment, then run pytest (slow tests are excluded by pyproject's addopts;
# pass -m "slow or not slow" to run them too). Exits with pytest's code.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

exec .venv/bin/python -m pytest "$@"
