"""Whole segments read just before the prompt (``whole_near_prompt``) instead of at their place in the book."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from support import one_torch_thread
from test_whole_reader import WHOLE, _ids, _open_whole_readers, _question_view

from lcirc_plugins import LCIRCConfig
from lcirc_plugins.errors import ConfigError
from lcirc_plugins.model.layer_reader import whole_before_prompt
from lcirc_plugins.model.memory import MemoryRows


def test_whole_rows_move_before_the_prompt_in_text_order_and_the_rest_stay():
    positions = torch.tensor(
        [[-900.0, -700.0, -512.0, -511.0, -510.0, -300.0, -64.0, -63.0, 0.0], [-40.0, -20.0, -10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    )
    whole = torch.tensor([[False, False, True, True, True, False, True, True, False], [False] * 9])
    moved = whole_before_prompt(positions, whole)
    assert moved[0].tolist() == [-900.0, -700.0, -5.0, -4.0, -3.0, -300.0, -2.0, -1.0, 0.0]
    assert torch.equal(moved[1], positions[1]), "a prompt without whole rows (or padding) reads as before"


@pytest.fixture
def near(make_lcirc, sample_text):
    """A whole-reader model (joint softmax, readers open) with the option on, and a question's rows with whole rows."""
    model, _, seen = _question_view(
        make_lcirc("llama", **WHOLE, whole_reader=True, whole_softmax="joint", whole_near_prompt=True), sample_text[:1500]
    )
    _open_whole_readers(model)
    rows = MemoryRows.of(seen)
    assert bool(rows.whole.any()) and not bool(rows.whole.all())
    return model, rows


def test_near_the_prompt_is_reading_the_whole_rows_stored_there(near):
    """The option changes the whole rows' positions and nothing else (the slots' reading, the QD bias, the rows)."""
    model, rows = near
    stored_there = dataclasses.replace(rows, positions=whole_before_prompt(rows.positions[None], rows.whole[None])[0])
    with one_torch_thread(), torch.no_grad():
        moved = model(_ids(), memory=rows).logits
        model.config.whole_near_prompt = False
        in_place = model(_ids(), memory=rows).logits
        torch.testing.assert_close(moved, model(_ids(), memory=stored_there).logits, rtol=1e-5, atol=1e-5)
    assert (moved - in_place).abs().max() > 1e-4, "where a whole segment is read changes what it reads"


def test_whole_near_prompt_needs_a_whole_reader():
    with pytest.raises(ConfigError, match="whole_near_prompt"):
        LCIRCConfig(reader="layer", whole_segments=1, whole_near_prompt=True)
    assert LCIRCConfig(reader="layer", whole_segments=1, whole_reader=True, whole_near_prompt=True).whole_near_prompt
