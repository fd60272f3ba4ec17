"""QA metrics against values computed by hand."""

from __future__ import annotations

import pytest

from lcirc_plugins.eval.metrics import (
    classification_score,
    code_sim_score,
    count_score,
    exact_match,
    extract_choice,
    f1_score,
    f1_score_zh,
    first_integer,
    multiple_choice_accuracy,
    normalize_answer,
    normalize_zh,
    retrieval_score,
    rouge_l,
    rouge_l_zh,
    rouge_mean,
    rouge_n,
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


def test_rouge_n_and_the_l_eval_mean_by_hand():
    # pred [cat, sat, on, mat], ref [cat, sat] (articles dropped)
    # ROUGE-1: overlap 2, P = 2/4, R = 2/2, F = 2 * .5 * 1 / 1.5 = 2/3
    # ROUGE-2: pred bigrams (cat sat) (sat on) (on mat), ref (cat sat): overlap 1, P = 1/3, R = 1, F = (2/3) / (4/3) = 1/2
    # ROUGE-L: LCS [cat, sat] = 2, P = 2/4, R = 1, F = 2/3
    pred, ref = "the cat sat on the mat", "the cat sat"
    assert rouge_n(pred, ref, 1) == pytest.approx(2 / 3)
    assert rouge_n(pred, ref, 2) == pytest.approx(1 / 2)
    assert rouge_mean(pred, ref) == pytest.approx((2 / 3 * 1 / 2 * 2 / 3) ** (1 / 3))
    # overlap is clipped by the reference's counts: [cat, cat, cat] vs [cat] -> 1, P = 1/3, R = 1, F = 1/2
    assert rouge_n("cat cat cat", "cat", 1) == pytest.approx(0.5)
    assert rouge_n("cat", "cat sat", 2) == 0.0  # no bigram in the prediction
    assert rouge_n("dog", ["cat", "dog"], 1) == 1.0
    with pytest.raises(ValueError):
        rouge_n("a", "a", 0)


def test_chinese_metrics_are_character_level():
    assert normalize_zh("你好， 世界！ OK.") == "你好世界ok"
    # [北, 京] vs [北, 京, 市]: common 2, P = 1, R = 2/3, F = 2 * (2/3) / (5/3) = 0.8
    assert f1_score_zh("北京。", "北京市") == pytest.approx(0.8)
    # LCS of [京, 北, 市] and [北, 京, 市] is 2, P = R = 2/3, F = 2/3; the bag F1 is 1.0
    assert rouge_l_zh("京北市", "北京市") == pytest.approx(2 / 3)
    assert f1_score_zh("京北市", "北京市") == pytest.approx(1.0)
    assert f1_score_zh("上海", "北京") == 0.0 and rouge_l_zh("！", "北京") == 0.0


def test_longbench_number_scores_by_hand():
    assert first_integer("key 0712, not 5") == "0712" and first_integer("none") is None
    # numbers [3, 3, 4], two of them equal the gold 3
    assert count_score("3 paragraphs, I think 3 or 4", "3") == pytest.approx(2 / 3)
    assert count_score("no idea", "3") == 0.0
    assert retrieval_score("Paragraph 7", "Paragraph 7") == 1.0
    assert retrieval_score("Paragraph 2 or Paragraph 7", "Paragraph 7") == pytest.approx(0.5)
    assert retrieval_score("段落3", "段落3", label="段落") == 1.0
    with pytest.raises(ValueError, match="Paragraph"):
        retrieval_score("7", "seven")


def test_classification_score_by_hand():
    classes = ["Number", "Person", "Location", "Description"]
    assert classification_score("Location", "Location", classes) == 1.0
    assert classification_score("Location or Person", "Location", classes) == pytest.approx(0.5)
    assert classification_score("Person", "Location", classes) == 0.0
    assert classification_score("no class named", "Location", classes) == 0.0
    # a class that is only part of the gold class's name does not count against it
    nested = ["Description", "Description of a person"]
    assert classification_score("Description of a person", "Description of a person", nested) == 1.0


def test_code_sim_score_reads_the_first_code_line():
    # the fence and the comment line are skipped; the next line matches exactly
    assert code_sim_score("```python\n# add them\nx = compute(a, b)\ny = 2", "x = compute(a, b)") == 1.0
    # difflib ratio 2 * M / T: "abcd" vs "abce" share 3 characters of 8 -> 0.75
    assert code_sim_score("abcd", "abce") == pytest.approx(0.75)
    assert code_sim_score("# only a comment", "x = 1") == 0.0
