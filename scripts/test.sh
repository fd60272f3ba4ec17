#!/usr/bin/env bash
# Set up the environment, then run pytest (slow tests are excluded by pyproject's addopts;
# pass -m "slow or not slow" to run them too). Exits with pytest's code.
# On CI (CI=true, as root with apt-get) Debian's chromium is installed for the browser test; elsewhere that
# test skips with a message when /usr/bin/chromium is missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"

if [ "${CI:-}" = "true" ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing Debian's chromium for the browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || echo "[test] could not install chromium: the browser test will skip" >&2
fi

exec .venv/bin/python -m pytest "$@"
