#!/usr/bin/env bash
# Set up the environment, then run the main job: answer a question about a book.
# Usage: bash scripts/run.sh [BOOK] [QUESTION]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
default_book="../shared/data/books/stevenson-treasure-island.txt"
[ -f "$default_book" ] || default_book="tests/data/sample-book.txt"
book="${1:-$default_book}"
question="${2:-Who is Long John Silver?}"
echo "[run] lcirc ask $book \"$question\""
exec .venv/bin/lcirc ask "$book" "$question"
