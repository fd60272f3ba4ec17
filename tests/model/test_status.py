"""What the front ends say about the model before the first answer, and ``run.sh``'s address."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from support import REPO

from lcirc_plugins.eval.card import measured_markdown, write_card
from lcirc_plugins.model.lcirc_model import DEFAULT_ADAPTER_DIR
from lcirc_plugins.model.status import CARD_END, CARD_START, UNTRAINED_NOTICE, card_headline, model_status

ROOT = REPO


def test_an_untrained_adapter_is_said_plainly(make_lcirc) -> None:
    status = model_status(make_lcirc(gate_init=0.0), "default" if not DEFAULT_ADAPTER_DIR.is_dir() else None)
    assert not status.trained and status.notice == UNTRAINED_NOTICE
    assert status.adapter == "untrained fallback" and "untrained: gates closed" in status.adapter_label
    assert "do not use the book" in status.markdown() and "keyword ranking (BM25)" in status.markdown()
    assert status.lines()[-1].startswith("note:")


def test_a_trained_adapter_shows_its_card_numbers(make_lcirc, tmp_path: Path) -> None:
    model = make_lcirc(gate_init=0.5)
    model.save_pretrained(tmp_path / "adapter")
    table = [
        {"task": "passkey", "system": "qd-lcirc", "length": 8192, "n": 5, "accuracy": 0.8},
        {"task": "passkey", "system": "truncated", "length": 8192, "n": 5, "accuracy": 0.2},
        {"task": "perplexity", "system": "lcirc", "length": 32768, "n": 1, "perplexity": 13.5},
    ]
    meta = {"date": "2026-12-01", "command": "python -m lcirc_plugins.eval.card", "total_wall_time_s": 60}
    card = tmp_path / "adapter" / "MODEL_CARD.md"
    card.write_text(f"# Card\n{CARD_START}\n{CARD_END}\n", encoding="utf-8")
    write_card(card, measured_markdown(table, [], meta))  # the card as the training script writes it
    status = model_status(model, tmp_path / "adapter")
    assert status.trained and status.notice is None and "untrained" not in status.markdown()
    assert status.headline == "qd-lcirc passkey 8192: accuracy 0.8; lcirc perplexity 32768: perplexity 13.5"
    assert f"**Model card:** {status.headline}" in status.markdown()
    assert card_headline(tmp_path / "missing.md") is None


def test_the_card_headline_shows_the_answering_path_s_row_per_task(tmp_path: Path) -> None:
    """A QD adapter answers with the question and the book in memory: its ``qd-lcirc-memory`` rows, not the others."""
    table = [
        {"task": "passkey", "system": system, "length": 32768, "n": 5, "accuracy": accuracy}
        for system, accuracy in (("truncated", 0.0), ("lcirc", 0.4), ("lcirc-memory", 0.6), ("qd-lcirc-memory", 1.0))
    ] + [{"task": "niah_single", "system": "lcirc-memory", "length": 32768, "n": 5, "accuracy": 0.2}]
    meta = {"date": "2026-12-04", "command": "python -m lcirc_plugins.eval.card", "total_wall_time_s": 60}
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(f"# Card\n{CARD_START}\n{CARD_END}\n", encoding="utf-8")
    write_card(card, measured_markdown(table, [], meta))
    assert card_headline(card) == "qd-lcirc-memory passkey 32768: accuracy 1; lcirc-memory niah_single 32768: accuracy 0.2"


def test_gates_decide_trained_not_the_name(make_lcirc) -> None:
    model = make_lcirc(gate_init=0.0)
    assert not model_status(model).trained
    with torch.no_grad():
        next(p for n, p in model.adapter.named_parameters() if n.endswith("attn_gate")).fill_(0.1)
    assert model_status(model).trained and model_status(model).adapter == "in-memory adapter"


RUN_SH_CASES = [
    ([], "http://127.0.0.1:7860"),
    (["--port", "7866"], "http://127.0.0.1:7866"),
    (["--host=0.0.0.0", "--port=8001"], "http://127.0.0.1:8001"),
    (["--host", "192.168.1.5", "--port", "9000"], "http://192.168.1.5:9000"),
]


@pytest.mark.parametrize(("args", "url"), RUN_SH_CASES)
def test_run_sh_prints_the_address_it_serves(args: list[str], url: str) -> None:
    """The real script (set-up check, then ``lcirc-app ... --help``, which exits before loading a model)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "run.sh"), *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"(open {url};" in result.stdout, result.stdout
    assert "usage: lcirc-app" in result.stdout
