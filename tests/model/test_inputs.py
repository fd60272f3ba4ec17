"""Bad input to the model: each case is a specific LCIRCError with a helpful message."""

from __future__ import annotations

import pytest

from lcirc_plugins.errors import BinaryInputError, EmptyInputError, InputTooLongError, LCIRCError


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_empty_text_is_refused(make_lcirc, text):
    with pytest.raises(EmptyInputError):
        make_lcirc("llama").compress(text)


def test_non_text_bytes_are_refused(make_lcirc):
    garbage = bytes(range(256)).decode("latin-1") * 20
    with pytest.raises(BinaryInputError, match="text"):
        make_lcirc("llama").compress(garbage)


def test_a_question_too_long_for_the_window_is_refused(make_lcirc, sample_text):
    model = make_lcirc("llama", window=256)
    memory = model.compress(sample_text[:1000])
    with pytest.raises(InputTooLongError, match="decoder window of 256 tokens"):
        model.answer(sample_text[:4000], memory, max_new_tokens=8)


def test_an_empty_question_is_refused(make_lcirc):
    with pytest.raises(EmptyInputError, match="question is empty"):
        make_lcirc("llama").answer("  ", None)


def test_every_error_is_an_lcirc_error():
    assert issubclass(InputTooLongError, LCIRCError) and issubclass(BinaryInputError, ValueError)


@pytest.mark.parametrize("text", ["\ud800", "Jim \udfff Hawkins"])
def test_unpaired_surrogates_are_refused_before_the_tokenizer(make_lcirc, text):
    """Found by tests/data/test_fuzzing.py: the tokenizer raised a bare TypeError on these strings."""
    model = make_lcirc("llama")
    calls = [
        lambda: model.compress(text),
        lambda: model.answer(text, None, max_new_tokens=2),
        lambda: model.prepare_prompt(text),
        lambda: model.prepare_prompt([{"role": "user", "content": text}]),
    ]
    for call in calls:
        with pytest.raises(BinaryInputError, match="unpaired surrogate"):
            call()
