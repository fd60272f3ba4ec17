"""The model card's measurements: systems, per-cell summaries, gains, and the card section rewrite."""

from __future__ import annotations

import json

import pytest
from support import SAMPLE_BOOK, default_adapter_loading, one_torch_thread

from lcirc_plugins.eval.card import (
    CARD_END,
    CARD_START,
    book_qa_rows,
    card_systems,
    needle_rows,
    relative_gains,
    summarise,
    write_card,
)


def test_the_card_compares_lcirc_with_and_without_the_question(make_lcirc, smollm2_tokenizer):
    model = make_lcirc("llama", query_dependent=True, gate_init=0.5)
    systems = card_systems(model)
    assert [s.name for s in systems] == ["truncated", "bm25-rag", "lcirc", "lcirc-memory", "qd-lcirc", "qd-lcirc-memory"]
    question = smollm2_tokenizer("What is the pass key?", add_special_tokens=False)["input_ids"]
    head = smollm2_tokenizer(SAMPLE_BOOK.read_text()[:2000], add_special_tokens=False)["input_ids"]
    with one_torch_thread():
        plain, conditioned = systems[2]._compress(head, question), systems[4]._compress(head, question)
    assert not plain.features.equal(conditioned.features), "only qd-lcirc lets the question shape the memory"


def test_needle_and_book_rows_summarise_per_cell(make_lcirc):
    systems = card_systems(make_lcirc("llama", query_dependent=True))[:1]
    book = SAMPLE_BOOK.read_text()
    with one_torch_thread():
        rows = needle_rows(systems, "passkey", [600], samples=2, haystack=None, seed=0)
        rows += book_qa_rows(systems, "book_facts", book, 600, samples=2, seed=0)
    table = summarise(rows)
    by_task = {r["task"]: r for r in table}
    assert by_task["passkey"]["n"] == 2 * 5, "two samples in each of five depths"
    assert by_task["book_facts"]["n"] == 2
    expected = sum(r["accuracy"] for r in rows if r["task"] == "passkey") / 10
    assert by_task["passkey"]["accuracy"] == pytest.approx(expected, abs=1e-4)


def test_the_answer_budget_reaches_every_needle_and_book_answer(make_lcirc, smollm2_tokenizer):
    systems = card_systems(make_lcirc("llama", query_dependent=True))[:1]
    book = SAMPLE_BOOK.read_text()

    def longest_reply(budget: int) -> int:
        with one_torch_thread():
            rows = needle_rows(systems, "passkey", [600], samples=1, haystack=None, seed=0, max_new_tokens=budget)
            rows += book_qa_rows(systems, "book_facts", book, 600, samples=1, seed=0, max_new_tokens=budget)
        assert {r["task"] for r in rows} == {"passkey", "book_facts"}
        return max(len(smollm2_tokenizer(r["prediction"], add_special_tokens=False)["input_ids"]) for r in rows)

    assert longest_reply(3) <= 3 < longest_reply(12), "a random tiny model rambles to the end of its budget"


def test_gains_are_relative_to_the_truncated_backbone():
    table = [
        {"task": "perplexity", "system": "truncated", "length": 8, "perplexity": 20.0},
        {"task": "perplexity", "system": "lcirc", "length": 8, "perplexity": 15.0},
        {"task": "perplexity", "system": "bm25-rag", "length": 8, "perplexity": 22.0},
    ]
    assert relative_gains(table) == [
        {"system": "lcirc", "length": 8, "gain_vs_truncated": 0.25},
        {"system": "bm25-rag", "length": 8, "gain_vs_truncated": -0.1},
    ]


def test_writing_the_card_replaces_only_the_measured_section(tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(f"# Card\nprose\n{CARD_START}\nold numbers\n{CARD_END}\nmore prose\n")
    write_card(card, "| new | table |")
    text = card.read_text()
    assert (
        "old numbers" not in text
        and "| new | table |" in text
        and text.startswith("# Card\nprose\n")
        and text.endswith("more prose\n")
    )
    (tmp_path / "bare.md").write_text("no markers")
    with pytest.raises(ValueError, match="no <!-- measured:start -->"):
        write_card(tmp_path / "bare.md", "x")


def test_a_named_section_is_written_beside_the_main_one(tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(f"{CARD_START}\nmain table\n{CARD_END}\n<!-- measured:keys:start -->\nold\n<!-- measured:keys:end -->\n")
    write_card(card, "| 50 keys |", section="keys")
    text = card.read_text()
    assert "main table" in text and "| 50 keys |" in text and "old" not in text
    with pytest.raises(ValueError, match="measured:cloze:start"):
        write_card(card, "x", section="cloze")


@pytest.mark.slow  # about 140 s here: every card task on the real default backbone, one sample each
def test_the_card_script_runs_on_the_default_adapter_fallback(tmp_path):
    """`python -m lcirc_plugins.eval.card --adapter default` loads like every entry point: with no shipped
    adapter it measures the untrained fallback (with its warning) instead of failing."""
    from lcirc_plugins.eval.card import main

    args = ["--adapter", "default", "--books", str(SAMPLE_BOOK), "--lengths", "200", "--needle-length", "200"]
    with one_torch_thread(), default_adapter_loading():
        assert main([*args, "--samples", "1", "--out", str(tmp_path / "card"), "--systems", "truncated", "lcirc-memory"]) == 0
        with pytest.raises(SystemExit, match="unknown systems \\['rag'\\]"):
            main([*args, "--samples", "1", "--out", str(tmp_path / "other"), "--systems", "rag"])
    table = json.loads((tmp_path / "card" / "card.json").read_text())["table"]
    assert {row["system"] for row in table} == {"truncated", "lcirc-memory"}, "only the chosen systems are measured"
    with one_torch_thread(), default_adapter_loading():
        assert main([*args, "--samples", "1", "--out", str(tmp_path / "ppl"), "--systems", "truncated", "--tasks", "perplexity"]) == 0
    table = json.loads((tmp_path / "ppl" / "card.json").read_text())["table"]
    assert {row["task"] for row in table} == {"perplexity"}, "only the chosen tasks are measured"


def test_reusing_segments_leaves_every_answer_as_it_was(make_lcirc):
    """The card reuses segments it read before (repeated filler): the rows must be those of reading everything."""
    model = make_lcirc("llama", reader="layer", lora_rank=4, tokens_per_slot=8, slot_selection=True, gca_layers=[0, 1, 2, 3], salience_layer=1, gate_init=0.5)
    systems = [s for s in card_systems(model) if s.name == "lcirc-memory"]
    with one_torch_thread():
        read = needle_rows(systems, "passkey", [600], samples=1, haystack=None, seed=0)
        with model.reusing_segments() as cache:
            reused = needle_rows(systems, "passkey", [600], samples=1, haystack=None, seed=0)
    assert cache.hits > cache.misses > 0, "the filler's segments repeat"
    assert [(r["prediction"], r["accuracy"]) for r in reused] == [(r["prediction"], r["accuracy"]) for r in read]
