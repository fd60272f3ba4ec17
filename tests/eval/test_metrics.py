"""QA metrics against values computed by hand."""

from __future__ import annotations

import pytest

from lcirc_plugins.eval.metrics import (
    exact_match,
    extract_choice,
    f1_score,
    multiple_choice_accuracy,
    normalize_answer,
    rouge_l,
    substring_match,
)


def test_normalize_answer_strips_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Cat, sat on A mat!  ") == "cat sat on mat"
    assert normalize_answer("An apple-pie.") == "applepie"  # SQuAD drops punctuation without a space


def test_f1_by_hand():
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]; common = 2
    # P = 2/2 = 1, R = 2/3, F1 = 2 * 1 * (2/3) / (1 + 2/3) = (4/3) / (5/3) = 0.8
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # repeated tokens count once per match: [cat, cat] vs [cat] -> common 1, P = 1/2, R = 1, F1 = 2/3
    assert f1_score("cat cat", "cat") == pytest.approx(2 / 3)
    assert f1_score("dog", "cat") == 0.0
    # best over references
    assert f1_score("the cat sat", ["dog", "cat sat"]) == pytest.approx(1.0)


def test_exact_match():
    assert exact_match("The Cat!", "cat") == 1.0
    assert exact_match("cat sat", "cat") == 0.0
    assert exact_match("Paris", ["London", "paris."]) == 1.0


def test_rouge_l_by_hand_differs_from_bag_f1():
    # normalised: pred [police, killed, gunman], ref [gunman, police, killed]
    # LCS = [police, killed] = 2, P = 2/3, R = 2/3, F = 2/3; the bag-of-tokens F1 is 1.0
    assert rouge_l("police killed the gunman", "the gunman police killed") == pytest.approx(2 / 3)
    assert f1_score("police killed the gunman", "the gunman police killed") == pytest.approx(1.0)
    # pred [a b c d] (letters, no articles), ref [b d]: LCS = 2, P = 2/4, R = 2/2, F = 2 * .5 * 1 / 1.5 = 2/3
    assert rouge_l("x b y d", "b d") == pytest.approx(2 / 3)
    assert rouge_l("nothing", "else") == 0.0


@pytest.mark.parametrize(
    ("prediction", "letter"),
    [("Answer: (B)", "B"), ("C. Paris is the capital", "C"), ("The answer is D", "D"), ("b", "B"), ("I really can't say", None)],
)
def test_extract_choice(prediction, letter):
    assert extract_choice(prediction) == letter


def test_multiple_choice_accuracy():
    assert multiple_choice_accuracy("Answer: (B) because...", "B") == 1.0
    assert multiple_choice_accuracy("Answer: (B) because...", "C") == 0.0


def test_substring_match_all_and_any():
    assert substring_match("The pass key is 71432.", ["71432"]) == 1.0
    assert substring_match("The pass key is 71433.", ["71432"]) == 0.0
    assert substring_match("values 12 and 34", ["12", "99"], "any") == 1.0
    assert substring_match("values 12 and 34", ["12", "99"], "all") == 0.0
    assert substring_match("values 12 and 34", ["12", "34"], "all") == 1.0
    with pytest.raises(ValueError):
        substring_match("x", ["x"], "most")
