"""Compressing a million tokens streams segment by segment: no full-length hidden-state tensors."""

from __future__ import annotations

import json
import subprocess
import sys

from support import FIXTURES, SAMPLE_BOOK

WORKER = FIXTURES / "peak_memory_worker.py"


def test_a_million_tokens_compress_without_full_length_hidden_states():
    result = subprocess.run([sys.executable, str(WORKER), str(SAMPLE_BOOK)], capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    small, large = report["small"], report["large"]
    assert large["num_tokens"] >= 1_000_000
    growth = large["peak_increase_mb"] - small["peak_increase_mb"]
    extra_tokens = large["num_tokens"] - small["num_tokens"]
    hidden_states_mb = extra_tokens * report["dim"] * 4 / 2**20  # what one full-length [N, d] fp32 tensor would cost
    # Allowed: the memory itself plus per-token bookkeeping (text, ids, char offsets: well under 64 B/token).
    budget_mb = large["features_mb"] + extra_tokens * 64 / 2**20
    assert growth < budget_mb, f"peak grew {growth:.0f} MB for {extra_tokens:,} more tokens (budget {budget_mb:.0f} MB)"
    assert growth < hidden_states_mb / 4, f"peak grew {growth:.0f} MB, close to a full hidden-state tensor ({hidden_states_mb:.0f} MB)"
