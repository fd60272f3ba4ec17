"""The shipped default adapter: it loads onto its backbone and retrieves pass keys from held-out book text.

The 8K test is in the default run (issue 16's gate for shipping); the 32K one is slow.
"""

from __future__ import annotations

import pytest
from support import SAMPLE_BOOK, SHARED_DATA

from lcirc_plugins.data.synthetic import derive_seed, passkey
from lcirc_plugins.eval.metrics import substring_match
from lcirc_plugins.eval.systems import LCIRCSystem
from lcirc_plugins.model.lcirc_model import DEFAULT_ADAPTER_DIR, LCIRCModel

pytestmark = pytest.mark.skipif(not DEFAULT_ADAPTER_DIR.is_dir(), reason="no default adapter is shipped in this checkout")


@pytest.fixture(scope="module")
def default_model() -> LCIRCModel:
    model = LCIRCModel.from_pretrained("default")
    yield model
    model.injector.detach()


def test_the_default_adapter_is_small_and_documented():
    weights = DEFAULT_ADAPTER_DIR / "adapter_model.safetensors"
    assert weights.stat().st_size <= 30 * 10**6
    card = (DEFAULT_ADAPTER_DIR / "MODEL_CARD.md").read_text()
    assert "<!-- measured:start -->" in card and "| passkey |" in card, "the card carries the measured table"


HELD_OUT_BOOK = SHARED_DATA / "books" / "stevenson-treasure-island.txt"  # never in training


def test_the_default_adapter_finds_pass_keys_in_8k_tokens_of_a_held_out_book(default_model):
    """The product path (compress the whole text, then answer from the memory alone), 20 keys at random depths."""
    book = HELD_OUT_BOOK.read_text(encoding="utf-8-sig")
    found = []
    for i in range(20):
        example = passkey(derive_seed(2026, i), num_tokens=8192, tokenizer=default_model.tokenizer, haystack=book)
        memory = default_model.compress(example.context)
        found.append(example.answer in default_model.answer(example.question, memory, max_new_tokens=16))
    assert sum(found) >= 18, f"{sum(found)}/20 pass keys found"


@pytest.mark.slow
def test_the_default_adapter_answers_passkeys_over_32k_tokens(default_model):
    system = LCIRCSystem(default_model)
    right = []
    for i in range(20):
        example = passkey(derive_seed(2026, i), num_tokens=32_768, tokenizer=default_model.tokenizer)
        right.append(substring_match(system.answer(example.context, example.question, 12), example.answers))
    assert sum(right) >= 18, f"{sum(right)}/20 pass keys retrieved"


def test_the_default_adapters_provenance_quotes_the_pass_key(default_model):
    """The answer's sources rank the segment holding the key first: what the answer read beyond what its prompt read."""
    book = SAMPLE_BOOK.read_text(encoding="utf-8-sig")[:12_000]
    middle = book.index(". ", len(book) // 2) + 2
    key = "The pass key is 48213. Remember it. 48213 is the pass key."
    memory = default_model.compress(book[:middle] + key + " " + book[middle:])
    prepared = default_model.prepare_answer("What is the pass key?", memory, max_new_tokens=12)
    answer = default_model.generate_text(prepared, max_new_tokens=12)[0]
    found = default_model.provenance(prepared, answer)
    assert "48213" in answer and found.method == "attention"
    assert "48213" in found.passages[0].text and found.passages[0].score > 0.5, found.passages
