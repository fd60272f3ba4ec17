"""Benchmark loaders on hand-written fixtures in each benchmark's real schema, the metric each dataset gets,
and clear errors for bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import FIXTURES

from lcirc_plugins.errors import CorruptFileError, EmptyInputError, UnsupportedFormatError
from lcirc_plugins.eval.datasets import (
    QARecord,
    load_benchmark,
    load_infinitebench,
    load_leval,
    load_longbench,
    score,
)

BENCHMARK_FILES = FIXTURES / "benchmarks"


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _longbench_line(**overrides: object) -> dict[str, object]:
    line = json.loads((BENCHMARK_FILES / "longbench.jsonl").read_text(encoding="utf-8").splitlines()[0])
    return {**line, **overrides}


def _record(metric: str, answers: tuple[str, ...], benchmark: str = "leval", dataset: str = "x") -> QARecord:
    return QARecord(benchmark, dataset, "0", "", "", answers, metric)


# ---------------------------------------------------------------------------------------------- LongBench


def test_longbench_fixture_loads_with_each_datasets_metric():
    records = load_longbench(BENCHMARK_FILES / "longbench.jsonl")
    assert [(r.dataset, r.metric, r.max_new_tokens) for r in records] == [
        ("hotpotqa", "qa_f1", 32),
        ("gov_report", "rouge_l", 512),
        ("trec", "classification", 64),
    ]
    hotpot, report, trec = records
    assert hotpot.id == "3f9c2b7e1a0d4c55b8e6f1a2c3d4e5f6a7b8c9d0e1f2a3b4" and hotpot.answers == ("Holmvik",)
    assert hotpot.question.startswith("Which town") and hotpot.context.startswith("Passage 1:")
    assert hotpot.origin == "longbench.jsonl:1"
    # the summary set has an empty input: the question is the task's instruction
    assert report.question == "Write a one-paragraph summary of the report."
    assert trec.all_classes == ("Number", "Person", "Location", "Description")
    assert trec.question.endswith("Which river flows through the city of Cairo?")


def test_longbench_scores_by_hand():
    hotpot, report, trec = load_longbench(BENCHMARK_FILES / "longbench.jsonl")
    # F1: [it, was, holmvik] vs [holmvik] -> P = 1/3, R = 1, F = 0.5
    assert score(hotpot, "It was Holmvik.") == pytest.approx(0.5)
    assert score(report, report.answers[0]) == pytest.approx(1.0)
    assert 0 < score(report, "The board replaced six kilometres of pipe.") < 1
    # trec is a few-shot set: only the first line counts (else "Location" and "Person" would score 1/2)
    assert score(trec, "Location\nPerson") == 1.0
    assert score(trec, "Location or Person") == pytest.approx(0.5)


def test_longbench_e_names_and_dataset_override(tmp_path):
    path = _write(tmp_path / "lb.jsonl", [_longbench_line(dataset="hotpotqa_e")])
    assert load_longbench(path)[0].dataset == "hotpotqa"
    assert load_longbench(path, dataset="narrativeqa")[0].max_new_tokens == 128


# ---------------------------------------------------------------------------------------------- InfiniteBench


def test_infinitebench_task_comes_from_the_file_name():
    passkeys = load_infinitebench(BENCHMARK_FILES / "infinitebench" / "passkey.jsonl")
    assert [(r.dataset, r.metric, r.id, r.answers) for r in passkeys] == [
        ("passkey", "first_int", "0", ("48213",)),  # "answer" as a string
        ("passkey", "first_int", "1", ("90577",)),  # and as a list
    ]
    assert passkeys[0].question == "What is the pass key?" and "48213" in passkeys[0].context
    assert score(passkeys[0], "The pass key is 48213.") == 1.0
    assert score(passkeys[0], "48213 or maybe 90577") == 1.0  # the first integer is what counts
    assert score(passkeys[0], "It is 4821 3") == 0.0


def test_infinitebench_choices_and_their_score():
    red, doctor = load_infinitebench(BENCHMARK_FILES / "infinitebench" / "longbook_choice_eng.jsonl")
    assert red.metric == "choice" and red.choices == ("Blue", "Red", "Green", "White") and red.answers == ("Red",)
    assert doctor.answers == ("The doctor from Wendel",)  # "answer" given as a plain string
    assert "B. Red" in red.question and red.question.endswith("Answer with the letter of the correct option.")
    assert score(red, "B") == 1.0 and score(red, "Answer: (B)") == 1.0 and score(red, "red") == 1.0
    assert score(red, "A") == 0.0 and score(red, "Blue") == 0.0
    assert score(doctor, "C. The doctor from Wendel") == 1.0 and score(doctor, "A. Tomas") == 0.0


def test_infinitebench_numeric_labels():
    find = _record("first_number", ("37",), "infinitebench", "math_find")
    assert score(find, "The largest number is 37.") == 1.0 and score(find, "It is 36") == 0.0
    run = _record("last_int", ("-2",), "infinitebench", "code_run")
    assert score(run, "The return value is 7") == 0.0 and score(run, "The result is: -2") == 1.0
    kv = _record("kv_match", ("a1b2-c3",), "infinitebench", "kv_retrieval")
    assert score(kv, 'The value is "a1b2-c3".') == 1.0 and score(kv, "a1b2") == 0.0


# ---------------------------------------------------------------------------------------------- L-Eval


def test_leval_one_document_several_questions():
    records = load_leval(BENCHMARK_FILES / "leval" / "quality.jsonl")
    assert [r.id for r in records] == ["1.0", "1.1", "1.2"]
    assert {r.metric for r in records} == {"exam_choice"} and {r.dataset for r in records} == {"quality"}
    # "input" is the long document, shared by the questions; "instructions" are the questions
    assert len({r.context for r in records}) == 1 and records[0].context.startswith("Ada kept the ferry log")
    assert records[0].question.startswith("Why did the ferry stop") and records[2].answers == ("(C) In the museum at Salt Point",)
    assert score(records[0], "B") == 1.0 and score(records[0], "(B) The river carried trees") == 1.0
    assert score(records[0], "Based on the text, the answer is B") == 1.0  # "Based" does not read as option B
    assert score(records[0], "Based on the text, the answer is C") == 0.0


def test_leval_f1_lines_and_judged_lines_are_skipped_with_a_warning():
    with pytest.warns(UserWarning, match="skipped 1 line"):
        records = load_leval(BENCHMARK_FILES / "leval" / "financial_qa.jsonl")
    assert len(records) == 2 and {r.metric for r in records} == {"qa_f1"}
    # [by, four, cents] vs [by, four, cents, share, to, 52, cents]: common 3, P = 1, R = 3/7, F = 0.6
    assert score(records[0], "By four cents.") == pytest.approx(0.6)


def test_leval_exam_scorers_by_hand():
    multi = _record("exam_choice", ("ABD",), dataset="coursera")
    assert score(multi, "ABD") == 1.0 and score(multi, "DBA") == 1.0
    assert score(multi, "AB") == 0.25  # some of several correct options
    assert score(multi, "ABC") == 0.0
    gsm = _record("exam_math", ("She sold 48 in April and half as many in May. The answer is 72",), dataset="gsm100")
    assert score(gsm, "48 + 24 = 72. The answer is 72.") == 1.0 and score(gsm, "The answer is 71") == 0.0
    topic = _record("exam_text", ("Sports in Brazil",), dataset="topic_retrieval_longchat")
    assert score(topic, "The first topic was sports in brazil") == 1.0 and score(topic, "football") == 0.0


def test_leval_rouge_lines_use_the_geometric_mean(tmp_path):
    line = {"instructions": ["Summarize."], "outputs": ["the cat sat"], "input": "doc", "source": "s", "evaluation": "rouge"}
    (record,) = load_leval(_write(tmp_path / "news_summ.jsonl", [line]))
    assert record.metric == "rouge_mean"
    assert score(record, "the cat sat on the mat") == pytest.approx((2 / 3 * 1 / 2 * 2 / 3) ** (1 / 3))


# ---------------------------------------------------------------------------------------------- format detection


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("longbench.jsonl", "longbench"),
        ("infinitebench/passkey.jsonl", "infinitebench"),
        ("leval/quality.jsonl", "leval"),
    ],
)
def test_auto_format_matches_the_named_loader(name, fmt):
    assert load_benchmark(BENCHMARK_FILES / name) == load_benchmark(BENCHMARK_FILES / name, fmt)
    assert {r.benchmark for r in load_benchmark(BENCHMARK_FILES / name)} == {fmt}


# ---------------------------------------------------------------------------------------------- bad files


def test_empty_file(tmp_path):
    path = tmp_path / "passkey.jsonl"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(EmptyInputError, match="no JSON lines"):
        load_infinitebench(path)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "lb.jsonl"
    path.write_text(json.dumps(_longbench_line()) + '\n{"input": "x", "context": \n', encoding="utf-8")
    with pytest.raises(CorruptFileError, match=r"lb.jsonl: line 2 is not valid JSON"):
        load_longbench(path)


def test_non_object_and_non_utf8_lines(tmp_path):
    with pytest.raises(CorruptFileError, match="line 1 is a JSON list, not an object"):
        load_longbench(_write(tmp_path / "a.jsonl", [[1, 2]]))
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"input": "\xff\xfe"}\n')
    with pytest.raises(CorruptFileError, match="not UTF-8"):
        load_longbench(path)


def test_missing_and_mistyped_fields(tmp_path):
    line = _longbench_line()
    del line["answers"]
    with pytest.raises(CorruptFileError, match=r"lb.jsonl:1: missing field 'answers' for longbench"):
        load_longbench(_write(tmp_path / "lb.jsonl", [line]))
    with pytest.raises(CorruptFileError, match="field 'answers' should be list, got str"):
        load_longbench(_write(tmp_path / "lb.jsonl", [_longbench_line(answers="Holmvik")]))
    with pytest.raises(CorruptFileError, match="should hold one or more answers"):
        load_longbench(_write(tmp_path / "lb.jsonl", [_longbench_line(answers=[])]))


def test_a_file_of_another_benchmark_is_named(tmp_path):
    shutil.copy(BENCHMARK_FILES / "longbench.jsonl", tmp_path / "quality.jsonl")
    with pytest.raises(CorruptFileError, match="missing field 'evaluation' .* looks like a longbench file"):
        load_leval(tmp_path / "quality.jsonl")


def test_unknown_tasks_and_datasets(tmp_path):
    shutil.copy(BENCHMARK_FILES / "infinitebench" / "passkey.jsonl", tmp_path / "mytask.jsonl")
    with pytest.raises(UnsupportedFormatError, match="unknown InfiniteBench task 'mytask'"):
        load_infinitebench(tmp_path / "mytask.jsonl")
    assert len(load_infinitebench(tmp_path / "mytask.jsonl", dataset="passkey")) == 2
    with pytest.raises(UnsupportedFormatError, match="unknown LongBench dataset 'recipes'"):
        load_longbench(_write(tmp_path / "lb.jsonl", [_longbench_line(dataset="recipes")]))
    with pytest.raises(UnsupportedFormatError, match="cannot tell the benchmark"):
        load_benchmark(_write(tmp_path / "x.jsonl", [{"text": "hello"}]))
    with pytest.raises(UnsupportedFormatError, match="unknown benchmark format"):
        load_benchmark(BENCHMARK_FILES / "longbench.jsonl", "ruler")


def test_inconsistent_choice_and_leval_lines(tmp_path):
    line = {"id": 0, "context": "c", "input": "q", "answer": ["Purple"], "options": ["Blue", "Red", "Green", "White"]}
    with pytest.raises(CorruptFileError, match="'Purple' is not one of the options"):
        load_infinitebench(_write(tmp_path / "longbook_choice_eng.jsonl", [line]))
    leval = {"instructions": ["q1", "q2"], "outputs": ["a1"], "input": "doc", "source": "s", "evaluation": "f1"}
    with pytest.raises(CorruptFileError, match="2 instructions but 1 outputs"):
        load_leval(_write(tmp_path / "multidoc_qa.jsonl", [leval]))
    with pytest.raises(UnsupportedFormatError, match="'codeU' needs its own scorer"):
        load_leval(_write(tmp_path / "codeU.jsonl", [{**leval, "outputs": ["a1", "a2"], "evaluation": "exam"}]))
    with pytest.raises(CorruptFileError, match="math_find.jsonl:1: the first_number scorer needs answers a number, got 'x'"):
        load_infinitebench(_write(tmp_path / "math_find.jsonl", [{**line, "answer": ["x"]}]))
    with pytest.raises(CorruptFileError, match='needs answers of the form "Paragraph N"'):
        load_longbench(_write(tmp_path / "lb.jsonl", [_longbench_line(dataset="passage_retrieval_en", answers=["P 3"])]))
    with pytest.raises(EmptyInputError, match="no questions with an automatic metric"), pytest.warns(UserWarning):
        load_leval(_write(tmp_path / "paper_assistant.jsonl", [{**leval, "evaluation": "LLM"}]))
