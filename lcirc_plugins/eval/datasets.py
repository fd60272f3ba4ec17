"""Local JSONL files of LongBench, InfiniteBench and L-Eval as one record type, scored by each benchmark's metric.

The loaders read the benchmarks' own field names (checked against their repositories):

* LongBench (THUDM/LongBench): one question per line, ``input`` (the question, or empty for summaries and
  code), ``context``, ``answers`` (list), ``length``, ``dataset``, ``language``, ``all_classes`` (list for
  trec / lsht, else null), ``_id``. The metric follows the line's ``dataset`` (LongBench's ``dataset2metric``).
* InfiniteBench (OpenBMB/InfiniteBench, the released JSONL): ``id``, ``context``, ``input``, ``answer`` (list or
  string; numbers for math_find / code_run), ``options`` (the four choices of longbook_choice_eng and
  code_debug). Lines do not name their task, so it comes from the file name (``longbook_qa_eng.jsonl``) or
  from ``dataset=``.
* L-Eval (OpenLMLab/LEval): one *document* per line with several questions: ``input`` is the long document,
  ``instructions`` the list of questions, ``outputs`` their reference answers, ``source`` the domain and
  ``evaluation`` the metric ("exam", "f1", "rouge"; "LLM" and "human" need a judge and are skipped with a
  warning). The task name (for the exam post-processing) comes from the file name or ``dataset=``.

Scores are in [0, 1] (the benchmarks print 100x). Where a scorer departs from the official one it says so.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorruptFileError, EmptyInputError, UnsupportedFormatError
from .metrics import (
    classification_score,
    code_sim_score,
    count_score,
    extract_choice,
    f1_score,
    f1_score_zh,
    first_integer,
    normalize_answer,
    retrieval_score,
    rouge_l,
    rouge_l_zh,
    rouge_mean,
    substring_match,
)

FORMATS = ("longbench", "infinitebench", "leval")
LETTERS = "ABCD"


@dataclass(frozen=True)
class QARecord:
    """One question about one context, with everything needed to ask it and score the answer.

    ``question`` is the text the systems receive (the benchmark's question, with an instruction when the
    benchmark's own prompt carries the task, and lettered options when there are ``choices``).
    """

    benchmark: str
    dataset: str
    id: str
    context: str
    question: str
    answers: tuple[str, ...]
    metric: str
    choices: tuple[str, ...] = ()
    all_classes: tuple[str, ...] = ()
    max_new_tokens: int = 32
    origin: str = field(default="", compare=False)  # "file.jsonl:line", for error messages and reports


# ---------------------------------------------------------------------------------------------- scorers


def _first_line(prediction: str) -> str:
    return prediction.lstrip("\n").split("\n")[0]


def _words(prediction: str, separators: str) -> list[str]:
    return re.sub("[" + re.escape(separators) + "]", " ", prediction).split()


def _choice(prediction: str, record: QARecord) -> float:
    """InfiniteBench choice tasks: the letter the prediction picks, or the gold option's text itself."""
    gold_letter = LETTERS[record.choices.index(record.answers[0])]
    pred = prediction.strip()
    if extract_choice(pred) == gold_letter:
        return 1.0
    return float(bool(pred) and normalize_answer(pred).startswith(normalize_answer(record.answers[0])))


def _first_number(prediction: str, record: QARecord) -> float:
    """InfiniteBench math_find: the first number in the prediction equals the label."""
    match = re.search(r"\d+\.\d+|\d+", prediction)
    return float(match is not None and float(match.group(0)) == float(record.answers[0]))


def _last_int(prediction: str, record: QARecord) -> float:
    """InfiniteBench code_run: the last word of the prediction is the integer label."""
    words = _words(prediction.strip(), "\n.`'\":")
    try:
        return float(bool(words) and int(words[-1]) == int(record.answers[0]))
    except ValueError:
        return 0.0


_LEADING_LETTERS = re.compile(r"\(?([A-D]+)\)?[.:,]?(?:\s|$)")


def _mc_letters(text: str) -> str:
    """The sorted option letters an answer gives: leading letters ("(B) because", "CA", "C.") or, failing
    that, the letter :func:`extract_choice` finds ("The answer is D")."""
    match = _LEADING_LETTERS.match(text.strip())
    letters = match.group(1) if match else extract_choice(text) or ""
    return "".join(sorted(set(letters)))


def _exam_letters(prediction: str, gold: str) -> float:
    """L-Eval's exam score on option letters: 1 when equal, 0.25 when a strict subset of a multi-answer gold.
    A prediction without any letter scores 0 (L-Eval substitutes a guess of "A")."""
    if not prediction:
        return 0.0
    if prediction == gold:
        return 1.0
    return 0.25 if set(prediction) < set(gold) else 0.0


def _exam_choice(prediction: str, record: QARecord) -> float:
    """L-Eval coursera / quality / tpo: the option letters of prediction and reference compared."""
    return max(_exam_letters(_mc_letters(prediction), _mc_letters(gold)) for gold in record.answers)


def _exam_number(text: str) -> str:
    """L-Eval gsm100: the number after "The answer is", else the last number of the first paragraph."""
    match = re.search(r"The answer is (\S+)", text)
    if match:
        word = match.group(1)
    else:
        word = next((w for w in reversed(text.split("\n\n")[0].split(" ")) if any(c.isdigit() for c in w)), "")
    return "".join(c for c in word.split(".")[0] if c.isdigit())


def _exam_math(prediction: str, record: QARecord) -> float:
    number = _exam_number(prediction)
    return float(bool(number) and any(number == _exam_number(gold) for gold in record.answers))


def _exam_text(prediction: str, record: QARecord) -> float:
    """L-Eval's exact-match score for non-option exam answers: equal numbers, or the reference (spaces and
    case ignored) inside the first non-trivial line of the prediction."""
    line = next((part for part in prediction.split("\n") if len(part) > 1), prediction)
    best = 0.0
    for gold in record.answers:
        try:
            best = max(best, float(float(prediction) == float(gold)))
        except ValueError:
            best = max(best, float(gold.lower().replace(" ", "") in line.lower().replace(" ", "")))
    return best


Scorer = Callable[[str, QARecord], float]

SCORERS: dict[str, Scorer] = {
    # LongBench
    "qa_f1": lambda p, r: f1_score(p, r.answers),
    "qa_f1_zh": lambda p, r: f1_score_zh(p, r.answers),
    "rouge_l": lambda p, r: rouge_l(p, r.answers),
    "rouge_l_zh": lambda p, r: rouge_l_zh(p, r.answers),
    "classification": lambda p, r: max(classification_score(p, a, r.all_classes) for a in r.answers),
    "retrieval": lambda p, r: max(retrieval_score(p, a) for a in r.answers),
    "retrieval_zh": lambda p, r: max(retrieval_score(p, a, label="段落") for a in r.answers),
    "count": lambda p, r: max(count_score(p, a) for a in r.answers),
    "code_sim": lambda p, r: max(code_sim_score(p, a) for a in r.answers),
    # InfiniteBench
    "first_int": lambda p, r: float(first_integer(p) == r.answers[0]),
    "kv_match": lambda p, r: float(r.answers[0] in _words(p, "\n:\"'.,?!{}")),
    "choice": _choice,
    "contains_any": lambda p, r: substring_match(p, r.answers, "any"),
    "first_number": _first_number,
    "last_int": _last_int,
    # L-Eval
    "exam_choice": _exam_choice,
    "exam_math": _exam_math,
    "exam_text": _exam_text,
    "rouge_mean": lambda p, r: rouge_mean(p, r.answers),
}

# LongBench scores only the first line of the answer on its few-shot sets (their examples are one line each).
_FIRST_LINE = {"trec", "triviaqa", "samsum", "lsht"}


def score(record: QARecord, prediction: str) -> float:
    """The record's official metric for ``prediction`` in [0, 1], the best over its reference answers."""
    if record.benchmark == "longbench" and record.dataset in _FIRST_LINE:
        prediction = _first_line(prediction)
    return float(SCORERS[record.metric](prediction, record))


# ---------------------------------------------------------------------------------------------- JSONL


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; a clear error for bad JSON, non-objects, no lines."""
    path = Path(path)
    seen = False
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorruptFileError(f"{path}: line {number} is not valid JSON ({err.msg}, column {err.colno})") from err
                if not isinstance(value, dict):
                    raise CorruptFileError(f"{path}: line {number} is a JSON {type(value).__name__}, not an object")
                seen = True
                yield number, value
    except UnicodeDecodeError as err:
        raise CorruptFileError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not seen:
        raise EmptyInputError(f"{path} has no JSON lines")


def detect_format(fields: Sequence[str]) -> str | None:
    """Which benchmark a line with these keys comes from, or None."""
    keys = set(fields)
    if {"instructions", "outputs"} <= keys:
        return "leval"
    if "answers" in keys and ("_id" in keys or "all_classes" in keys or "dataset" in keys):
        return "longbench"
    if "answer" in keys and "input" in keys:
        return "infinitebench"
    return None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def _get(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str, benchmark: str) -> Any:
    if name not in obj:
        looks = detect_format(list(obj))
        hint = f"; it looks like a {looks} file" if looks and looks != benchmark else ""
        raise CorruptFileError(f"{where}: missing field {name!r} for {benchmark} (the line has {sorted(obj)}){hint}")
    value = obj[name]
    if not isinstance(value, kind):
        raise CorruptFileError(f"{where}: field {name!r} should be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _texts(values: Any, where: str, name: str) -> tuple[str, ...]:
    """Reference answers as strings (InfiniteBench has numeric labels); an empty list is an error."""
    items = values if isinstance(values, list) else [values]
    if not items or any(isinstance(v, (dict, list)) or v is None for v in items):
        raise CorruptFileError(f"{where}: field {name!r} should hold one or more answers, got {values!r}")
    return tuple(str(v) for v in items)


# Answers some scorers parse; checked at load time so a bad label fails before any model time is spent.
_ANSWER_CHECKS: dict[str, tuple[Callable[[str], object], str]] = {
    "first_number": (float, "a number"),
    "last_int": (int, "an integer"),
    "retrieval": (lambda a: retrieval_score("", a), 'of the form "Paragraph N"'),
    "retrieval_zh": (lambda a: retrieval_score("", a, label="段落"), 'of the form "段落N"'),
}


def _check_answers(metric: str, answers: tuple[str, ...], where: str) -> tuple[str, ...]:
    if metric in _ANSWER_CHECKS:
        parse, kind = _ANSWER_CHECKS[metric]
        for answer in answers:
            try:
                parse(answer)
            except ValueError:
                raise CorruptFileError(f"{where}: the {metric} scorer needs answers {kind}, got {answer!r}") from None
    return answers


def _with_choices(question: str, choices: Sequence[str]) -> str:
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, choices))
    return f"{question}\n\n{options}\n\nAnswer with the letter of the correct option."


def _task_name(path: Path, dataset: str | None, known: dict[str, Any], benchmark: str) -> str:
    name = dataset or path.stem
    if name not in known:
        raise UnsupportedFormatError(
            f"{path}: unknown {benchmark} task {name!r} (taken from the file name); name the file after the task "
            f"or pass dataset=, one of {sorted(known)}"
        )
    return name


# ---------------------------------------------------------------------------------------------- LongBench

# dataset -> (metric, max new tokens); LongBench's dataset2metric and dataset2maxlen.
LONGBENCH: dict[str, tuple[str, int]] = {
    "narrativeqa": ("qa_f1", 128),
    "qasper": ("qa_f1", 128),
    "multifieldqa_en": ("qa_f1", 64),
    "multifieldqa_zh": ("qa_f1_zh", 64),
    "hotpotqa": ("qa_f1", 32),
    "2wikimqa": ("qa_f1", 32),
    "musique": ("qa_f1", 32),
    "dureader": ("rouge_l_zh", 128),
    "gov_report": ("rouge_l", 512),
    "qmsum": ("rouge_l", 512),
    "multi_news": ("rouge_l", 512),
    "vcsum": ("rouge_l_zh", 512),
    "trec": ("classification", 64),
    "triviaqa": ("qa_f1", 32),
    "samsum": ("rouge_l", 128),
    "lsht": ("classification", 64),
    "passage_count": ("count", 32),
    "passage_retrieval_en": ("retrieval", 32),
    "passage_retrieval_zh": ("retrieval_zh", 32),
    "lcc": ("code_sim", 64),
    "repobench-p": ("code_sim", 64),
}

# LongBench's prompts carry the task for sets whose ``input`` is empty or not a question; ours, in brief.
_LONGBENCH_INSTRUCTIONS = {
    "gov_report": "Write a one-paragraph summary of the report.",
    "multi_news": "Write a one-paragraph summary of the news articles.",
    "vcsum": "Write a one-paragraph summary of the meeting, in Chinese.",
    "qmsum": "Answer the query about the meeting transcript in a few sentences.",
    "trec": "Give the type of the last question, in the same way as the examples.",
    "lsht": "Give the category of the last news item, in the same way as the examples.",
    "triviaqa": "Answer the last question in the same way as the examples.",
    "samsum": "Summarize the last dialogue in the same way as the examples.",
    "passage_count": "How many different paragraphs are there, counting duplicates once? Answer with one number.",
    "passage_retrieval_en": 'Which paragraph is the following abstract from? Answer in the form "Paragraph N".',
    "passage_retrieval_zh": 'Which paragraph is the following summary from? Answer in the form "段落N".',
    "lcc": "Write the next line of the code.",
    "repobench-p": "Write the next line of the code.",
}


def load_longbench(path: str | Path, *, dataset: str | None = None) -> list[QARecord]:
    """LongBench (or LongBench-E, ``*_e``) lines; the metric follows each line's ``dataset`` (or ``dataset=``)."""
    path = Path(path)
    records = []
    for number, obj in read_jsonl(path):
        where = f"{path.name}:{number}"
        name = dataset or _get(obj, "dataset", str, where, "longbench")
        base = name[:-2] if name.endswith("_e") and name[:-2] in LONGBENCH else name
        if base not in LONGBENCH:
            raise UnsupportedFormatError(f"{where}: unknown LongBench dataset {name!r}; one of {sorted(LONGBENCH)}")
        metric, max_new = LONGBENCH[base]
        question = _get(obj, "input", str, where, "longbench")
        instruction = _LONGBENCH_INSTRUCTIONS.get(base, "")
        question = f"{instruction}\n\n{question}".strip() if instruction else question
        answers = _texts(_get(obj, "answers", list, where, "longbench"), where, "answers")
        classes = obj.get("all_classes") or []
        if not isinstance(classes, list):
            raise CorruptFileError(f"{where}: field 'all_classes' should be a list or null, got {type(classes).__name__}")
        if metric == "classification" and not classes:
            raise CorruptFileError(f"{where}: {base} is a classification set and needs 'all_classes'")
        records.append(
            QARecord(
                benchmark="longbench",
                dataset=base,
                id=str(obj.get("_id", number)),
                context=_get(obj, "context", str, where, "longbench"),
                question=question,
                answers=_check_answers(metric, answers, where),
                metric=metric,
                all_classes=tuple(str(c) for c in classes),
                max_new_tokens=max_new,
                origin=where,
            )
        )
    return records


# ---------------------------------------------------------------------------------------------- InfiniteBench

# task -> (metric, max new tokens); InfiniteBench's compute_scores.py and DATA_NAME_TO_MAX_NEW_TOKENS.
# longbook_sum_eng is scored there with ROUGE-Lsum (sentence-split LCS); here with plain ROUGE-L.
# math_calc (30,000 new tokens, a list-valued label) is not supported.
INFINITEBENCH: dict[str, tuple[str, int]] = {
    "passkey": ("first_int", 6),
    "number_string": ("first_int", 12),
    "kv_retrieval": ("kv_match", 50),
    "longbook_sum_eng": ("rouge_l", 1200),
    "longbook_choice_eng": ("choice", 40),
    "longbook_qa_eng": ("qa_f1", 40),
    "longbook_qa_chn": ("qa_f1_zh", 40),
    "longdialogue_qa_eng": ("contains_any", 40),
    "math_find": ("first_number", 3),
    "code_run": ("last_int", 5),
    "code_debug": ("choice", 5),
}


def load_infinitebench(path: str | Path, *, dataset: str | None = None) -> list[QARecord]:
    """InfiniteBench lines of one task, named by the file (``passkey.jsonl``) or by ``dataset=``."""
    path = Path(path)
    task = _task_name(path, dataset, INFINITEBENCH, "InfiniteBench")
    metric, max_new = INFINITEBENCH[task]
    records = []
    for number, obj in read_jsonl(path):
        where = f"{path.name}:{number}"
        question = _get(obj, "input", str, where, "infinitebench")
        answers = _texts(_get(obj, "answer", (list, str, int, float), where, "infinitebench"), where, "answer")
        answers = _check_answers(metric, answers, where)
        choices: tuple[str, ...] = ()
        if metric == "choice":
            if len(answers) == 2 and answers[1] in LETTERS:  # some releases store [option text, letter]
                answers = answers[:1]
            choices = tuple(str(o) for o in _get(obj, "options", list, where, "infinitebench"))
            if not 2 <= len(choices) <= len(LETTERS):
                raise CorruptFileError(f"{where}: 'options' should hold 2 to 4 choices, got {len(choices)}")
            if answers[0] not in choices:
                raise CorruptFileError(f"{where}: the answer {answers[0]!r} is not one of the options")
            question = _with_choices(question, choices)
        records.append(
            QARecord(
                benchmark="infinitebench",
                dataset=task,
                id=str(_get(obj, "id", (int, str), where, "infinitebench")),
                context=_get(obj, "context", str, where, "infinitebench"),
                question=question,
                answers=answers,
                metric=metric,
                choices=choices,
                max_new_tokens=max_new,
                origin=where,
            )
        )
    return records


# ---------------------------------------------------------------------------------------------- L-Eval

# L-Eval tasks whose exam answers are option letters, and the ones with their own answer extraction.
_LEVAL_OPTION_TASKS = {"coursera", "quality", "tpo"}
_LEVAL_UNSUPPORTED = {"codeU", "sci_fi"}  # bespoke scorers (code output parsing, paired true/false judgements)
_LEVAL_JUDGED = {"llm", "human"}
LEVAL_MAX_NEW_TOKENS = 512  # L-Eval's baselines use one budget for every task


def _leval_metric(task: str, evaluation: str, where: str) -> str:
    if evaluation == "exam":
        if task in _LEVAL_UNSUPPORTED:
            raise UnsupportedFormatError(f"{where}: L-Eval task {task!r} needs its own scorer, which is not implemented")
        if task in _LEVAL_OPTION_TASKS:
            return "exam_choice"
        return "exam_math" if task.startswith("gsm") else "exam_text"
    if evaluation == "f1":
        return "qa_f1"
    if evaluation == "rouge":
        return "rouge_mean"
    raise UnsupportedFormatError(f"{where}: unknown L-Eval evaluation {evaluation!r}; expected exam, f1, rouge, LLM or human")


def load_leval(path: str | Path, *, dataset: str | None = None) -> list[QARecord]:
    """L-Eval lines (a document and its questions), one record per question; judged lines are skipped."""
    path = Path(path)
    task = dataset or path.stem
    records, judged = [], 0
    for number, obj in read_jsonl(path):
        where = f"{path.name}:{number}"
        evaluation = _get(obj, "evaluation", str, where, "leval").strip().lower()
        if evaluation in _LEVAL_JUDGED:
            judged += 1
            continue
        metric = _leval_metric(task, evaluation, where)
        document = _get(obj, "input", str, where, "leval")
        questions = _get(obj, "instructions", list, where, "leval")
        outputs = _get(obj, "outputs", list, where, "leval")
        if len(questions) != len(outputs):
            raise CorruptFileError(f"{where}: {len(questions)} instructions but {len(outputs)} outputs")
        for k, (question, output) in enumerate(zip(questions, outputs)):
            if not isinstance(question, str):
                raise CorruptFileError(f"{where}: instruction {k} should be a string, got {type(question).__name__}")
            records.append(
                QARecord(
                    benchmark="leval",
                    dataset=task,
                    id=f"{number}.{k}",
                    context=document,
                    question=question,
                    answers=_texts(output, where, f"outputs[{k}]"),
                    metric=metric,
                    max_new_tokens=LEVAL_MAX_NEW_TOKENS,
                    origin=where,
                )
            )
    if judged:
        warnings.warn(f"{path}: skipped {judged} line(s) scored by an LLM or human judge", stacklevel=2)
    if not records:
        raise EmptyInputError(f"{path}: no questions with an automatic metric (exam, f1, rouge)")
    return records


LOADERS: dict[str, Callable[..., list[QARecord]]] = {
    "longbench": load_longbench,
    "infinitebench": load_infinitebench,
    "leval": load_leval,
}


def load_benchmark(path: str | Path, format: str = "auto", *, dataset: str | None = None) -> list[QARecord]:
    """Records of a local benchmark file; ``format`` is one of :data:`FORMATS` or ``"auto"`` (from the first line)."""
    if format == "auto":
        lines = read_jsonl(path)
        try:
            _, first = next(lines)
        finally:
            lines.close()
        detected = detect_format(list(first))
        if detected is None:
            raise UnsupportedFormatError(
                f"{path}: cannot tell the benchmark from the fields {sorted(first)}; pass one of {list(FORMATS)}"
            )
        format = detected
    if format not in LOADERS:
        raise UnsupportedFormatError(f"unknown benchmark format {format!r}; choose from {list(FORMATS)} or 'auto'")
    return LOADERS[format](path, dataset=dataset)
