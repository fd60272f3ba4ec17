#!/usr/bin/env bash
# Set up the environment, then run the main job: answer a question about a book.
# Usage: bash scripts/run.sh [BOOK] [QUESTION]   (BOOK: txt, md, pdf, epub or a saved *.safetensors memory)
set -euo pipefail
caller_dir="$PWD"
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"  # cds to the repo root
if [ -n "${1:-}" ]; then
    book="$1"
    [[ "$book" = /* ]] || book="$caller_dir/$book"
elif [ -f ../shared/data/books/stevenson-treasure-island.txt ]; then
    book="../shared/data/books/stevenson-treasure-island.txt"
else
    book="tests/data/sample-book.txt"
fi
question="${2:-Who is Long John Silver?}"
echo "[run] lcirc ask $book \"$question\""
exec .venv/bin/lcirc ask "$book" "$question"
