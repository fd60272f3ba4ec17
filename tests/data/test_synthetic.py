"""Synthetic long-context tasks: deterministic under their seed, and their answers really are in the context.

Book-based tests use the in-repo excerpt ``tests/fixtures/sample-book.txt`` so they run anywhere; the tests on
the Paul Graham essay haystack read it from ``../shared/data/haystack/`` at run time (it is copyrighted and
never copied into the project) and skip if that folder is missing.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import REPO, SAMPLE_BOOK

from lcirc_plugins.data.qa_generation import (
    QAGenerationStats,
    call_llm,
    chunk_spans,
    generate_qa_jsonl,
    parse_qa_reply,
)
from lcirc_plugins.data.shared import shared_data_dir
from lcirc_plugins.data.synthetic import (
    FILLER,
    NEEDLE_TEMPLATE,
    TASKS,
    LongContextExample,
    book_cloze,
    count_tokens,
    derive_seed,
    load_haystack,
    make_dataset,
    niah_multikey,
    niah_multiquery,
    niah_multivalue,
    niah_single,
    passkey,
    read_jsonl,
    take_piece,
    with_decoy_passkey,
    write_jsonl,
)
from lcirc_plugins.errors import EmptyInputError

SHARED_DATA = shared_data_dir()
HAYSTACK_DIR = SHARED_DATA / "haystack"
TASK_NAMES = list(TASKS)


@pytest.fixture(scope="module")
def book() -> str:
    return load_haystack(SAMPLE_BOOK)


@pytest.fixture(scope="module")
def essays() -> str:
    if not HAYSTACK_DIR.is_dir():
        pytest.skip(f"{HAYSTACK_DIR} is missing: the shared haystack data (Paul Graham essays) is not available here")
    return load_haystack(HAYSTACK_DIR)


def generate(task: str, seed: int, haystack: str, **kwargs) -> LongContextExample:
    """Example ``seed`` of ``task`` on ``haystack`` (12,000 characters unless a length is given)."""
    if "num_tokens" not in kwargs:
        kwargs.setdefault("length_chars", 12_000)
    if task == "passkey":
        return passkey(seed, **kwargs)
    source = "book" if task.startswith("book") else "haystack"
    return TASKS[task](seed, **{source: haystack}, **kwargs)


def check_evidence(ex: LongContextExample, book: str) -> None:
    """The answer (every value, for multi-value tasks) is in the evidence the generator says it put there."""
    assert ex.evidence_spans, "an example must say where its evidence is"
    evidence = [ex.context[s:e] for s, e in ex.evidence_spans]
    if ex.metadata["match"] == "all":
        assert ex.answer == ", ".join(ex.answers)
        assert len(ex.answers) == len(evidence) > 1
        for value, text in zip(ex.answers, evidence):
            assert value in text
    else:
        assert ex.answer == ex.answers[0]
        assert all(any(a in text for text in evidence) for a in ex.answers)

    if ex.task == "passkey":
        assert evidence == [f"The pass key is {ex.answer}. Remember it. {ex.answer} is the pass key."]
        assert ex.context.count(ex.answer) == 2
    elif ex.task.startswith("niah"):
        keys = ex.metadata["keys"]
        span_keys = keys * len(ex.answers) if len(keys) == 1 else keys
        assert evidence == [NEEDLE_TEMPLATE.format(key=k, value=v) for k, v in zip(span_keys, ex.answers)]
        assert all(ex.context.count(v) == 1 for v in ex.answers), "a value also occurs outside its needle"
        assert all(k in ex.question for k in keys)
    elif ex.task == "book_facts":
        assert evidence == [ex.metadata["fact"]]
        s, e = ex.evidence_spans[0]
        rest = ex.context[:s] + ex.context[e + 1 :] if e < len(ex.context) else ex.context[: s - 1]
        assert rest in book + "\n\n" + book, "the haystack around the fact must be the book's own text"
    elif ex.task == "book_cloze":
        (s, e), at = ex.evidence_spans[0], ex.metadata["entity_offset"]
        assert s <= at < e and ex.context[at : at + len(ex.answer)] == ex.answer


# ---------------------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASK_NAMES)
def test_same_seed_gives_the_same_example_and_other_seeds_other_examples(task: str, book: str) -> None:
    a, b = generate(task, 7, book), generate(task, 7, book)
    assert a == b and a.to_json() == b.to_json()
    examples = [generate(task, seed, book) for seed in range(5)]
    assert len({(e.context, e.question, e.answer) for e in examples}) == 5
    assert len({(e.question, e.answer) for e in examples}) == 5  # not just another haystack around one needle
    if not task.startswith("book"):  # numbers are drawn from millions; book tasks pick from small name lists
        assert len({e.answer for e in examples}) == 5


def test_examples_are_identical_across_processes_and_hash_seeds(book: str) -> None:
    """No set/dict-order or ``hash()`` dependence: another interpreter with another PYTHONHASHSEED agrees."""
    script = f"""
import hashlib, sys, types
pkg = types.ModuleType("lcirc_plugins"); pkg.__path__ = [{str(REPO / "lcirc_plugins")!r}]
sys.modules["lcirc_plugins"] = pkg  # skip the package __init__ (torch): only the stdlib generators are needed
from lcirc_plugins.data.synthetic import TASKS, load_haystack, passkey
book = load_haystack({str(SAMPLE_BOOK)!r})
h = hashlib.sha256()
for task, fn in TASKS.items():
    for seed in (0, 1):
        ex = passkey(seed, length_chars=6000) if task == "passkey" else fn(seed, book, length_chars=6000)
        h.update(ex.to_json().encode())
print(h.hexdigest())
"""
    expected = hashlib.sha256()
    for task in TASK_NAMES:
        for seed in (0, 1):
            expected.update(generate(task, seed, book, length_chars=6000).to_json().encode())
    hash_seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
    )
    assert out.stdout.strip() == expected.hexdigest()


def test_make_dataset_is_deterministic_and_prefix_stable(book: str) -> None:
    first = list(make_dataset("niah_single", 5, seed=3, haystack=SAMPLE_BOOK, length_chars=4000))  # Path: read once
    again = list(make_dataset("niah_single", 3, seed=3, haystack=book, length_chars=4000))
    other = list(make_dataset("niah_single", 5, seed=4, haystack=book, length_chars=4000))
    assert len(first) == 5 and first[:3] == again
    assert [e.metadata["seed"] for e in first] == [derive_seed(3, i) for i in range(5)]
    assert len({e.answer for e in first}) == 5 and not {e.answer for e in first} & {e.answer for e in other}
    assert derive_seed(0, 0) == int.from_bytes(hashlib.sha256(b"0/0").digest()[:8], "big")
    with pytest.raises(ValueError, match="unknown task"):
        next(make_dataset("niah_everything", 1, seed=0))


# ---------------------------------------------------------------------------------------------------------
# The answers are in the context, where and how the generator says
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", TASK_NAMES)
def test_answers_are_in_the_context_at_the_evidence_spans(task: str, seed: int, book: str) -> None:
    ex = generate(task, seed, book)
    assert ex.task == task
    check_evidence(ex, book)
    assert abs(len(ex.context) - 12_000) <= 0.02 * 12_000


@pytest.mark.parametrize("depth", [0.0, 0.1, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("task", ["passkey", "niah_single", "niah_multikey", "book_facts"])
def test_evidence_sits_at_the_requested_depth(task: str, depth: float, book: str) -> None:
    ex = generate(task, 3, book, depth=depth, length_chars=20_000)
    start = ex.evidence_spans[0][0]
    assert ex.depth == depth
    assert abs(start / len(ex.context) - depth) < 0.03
    check_evidence(ex, book)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("task", ["niah_single", "niah_multikey", "book_facts", "book_cloze"])
def test_a_decoy_pass_key_hides_beside_the_evidence_without_moving_it(task: str, seed: int, book: str) -> None:
    plain = generate(task, seed, book, length_chars=4_000)
    decoyed = with_decoy_passkey(plain, seed)
    decoy = decoyed.metadata["decoy"]
    start, end = decoyed.metadata["decoy_span"]
    key = decoy.split()[4].rstrip(".")
    assert decoy == f"The pass key is {key}. Remember it. {key} is the pass key." and decoyed.context[start:end] == decoy
    assert (decoyed.question, decoyed.answers) == (plain.question, plain.answers) and not any(key in a for a in plain.answers)
    assert [decoyed.context[s:e] for s, e in decoyed.evidence_spans] == [plain.context[s:e] for s, e in plain.evidence_spans]
    rest = decoyed.context[end + 1 :] if end < len(decoyed.context) else ""
    assert (decoyed.context[:start] + rest).rstrip() == plain.context.rstrip(), "the decoy is the only change"
    assert with_decoy_passkey(plain, seed) == decoyed, "seeded"


def test_a_pass_key_example_takes_no_decoy(book: str) -> None:
    with pytest.raises(ValueError, match="two answers"):
        with_decoy_passkey(generate("passkey", 0, book), 0)


@pytest.mark.parametrize("generator", [niah_multivalue, niah_multiquery])
def test_each_value_sits_at_its_requested_depth(generator, book: str) -> None:
    depths = [0.9, 0.05, 0.6, 0.3]
    ex = generator(5, book, length_chars=20_000, depths=depths)
    assert ex.depth is None and ex.metadata["depths"] == depths
    actual = [s / len(ex.context) for s, _ in ex.evidence_spans]
    assert all(abs(a - d) < 0.03 for a, d in zip(actual, depths)), actual
    check_evidence(ex, book)


def test_multikey_distractors_are_present_and_distinct_from_the_asked_key(book: str) -> None:
    for seed in range(3):
        ex = niah_multikey(seed, book, num_keys=5, length_chars=15_000)
        (asked,) = ex.metadata["keys"]
        distractors, values = ex.metadata["distractor_keys"], ex.metadata["distractor_values"]
        assert len(distractors) == 4 and len(set(distractors)) == 4 and asked not in distractors
        assert asked in ex.question and not any(k in ex.question for k in distractors)
        assert len(set(values) | {ex.answer}) == 5
        for key, value, (s, e) in zip(distractors, values, ex.metadata["distractor_spans"]):
            assert ex.context[s:e] == NEEDLE_TEMPLATE.format(key=key, value=value)
            assert ex.context.count(value) == 1
        check_evidence(ex, book)


def test_multivalue_and_multiquery_ask_for_every_value(book: str) -> None:
    mv = niah_multivalue(11, book, num_values=3, length_chars=10_000)
    assert len(mv.answers) == 3 and len(set(mv.answers)) == 3 and mv.metadata["match"] == "all"
    assert mv.question.startswith("What are all the special magic numbers for " + mv.metadata["keys"][0])

    mq = niah_multiquery(11, book, num_queries=3, num_distractors=2, length_chars=10_000)
    keys = mq.metadata["keys"]
    assert mq.question.index(keys[0]) < mq.question.index(keys[1]) < mq.question.index(keys[2])
    assert len(mq.metadata["distractor_keys"]) == 2 and not set(keys) & set(mq.metadata["distractor_keys"])
    for key, value, (s, e) in zip(keys, mq.answers, mq.evidence_spans):  # answers follow the question's key order
        assert mq.context[s:e] == NEEDLE_TEMPLATE.format(key=key, value=value)
    check_evidence(mv, book)
    check_evidence(mq, book)


def test_passkey_filler_is_the_standard_one_unless_a_haystack_is_given(book: str) -> None:
    ex = passkey(0, length_chars=5000, depth=0.5)
    s, e = ex.evidence_spans[0]
    filler = ex.context[:s] + ex.context[e + 1 :]
    sentences = set(re.split(r"(?<=\.) ", FILLER))
    assert set(re.split(r"(?<=\.) ", filler.strip())) == sentences
    on_book = passkey(0, length_chars=5000, depth=0.5, haystack=book)
    assert on_book.metadata["filler"] == "haystack" and "grass is green" not in on_book.context
    check_evidence(on_book, book)


@pytest.mark.parametrize("seed", range(4))
def test_cloze_blanks_a_repeated_entity_of_the_book(seed: int, book: str) -> None:
    ex = book_cloze(seed, book, length_chars=15_000)
    (s, e), at = ex.evidence_spans[0], ex.metadata["entity_offset"]
    assert ex.context[at : at + len(ex.answer)] == ex.answer and s <= at < e
    assert ex.question.count("____") == 1 and ex.answer not in ex.question
    quoted = ex.question.split("'", 1)[1].rsplit("'", 1)[0]
    assert quoted.replace("____", ex.answer) == " ".join(ex.context[s:e].split())  # the blank is the entity
    assert ex.answer[0].isupper() and ex.answer not in {"I", "Mr", "The", "He", "She"}
    assert len(re.findall(rf"\b{ex.answer}\b", book)) >= 2
    assert ex.context in book + "\n\n" + book  # the context is the book's own text, unchanged


def test_cloze_on_the_whole_book_and_at_a_depth(book: str) -> None:
    whole = book_cloze(1, book)
    assert whole.context == book
    for depth in (0.2, 0.8):
        ex = book_cloze(1, book, depth=depth)
        assert abs(ex.evidence_spans[0][0] / len(book) - depth) < 0.05
    with pytest.raises(ValueError, match="no sentence"):  # in any window
        book_cloze(0, "the cat sat on the mat. " * 20)
    with pytest.raises(ValueError, match="no sentence"):
        book_cloze(0, "the cat sat on the mat. " * 200, length_chars=500)
    short = [book_cloze(seed, book, length_chars=1500) for seed in range(10)]  # small windows: others are tried
    assert all(e.answer in e.context[slice(*e.evidence_spans[0])] for e in short)


# ---------------------------------------------------------------------------------------------------------
# Lengths
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "num_tokens"),
    [("passkey", 3000), ("niah_single", 3000), ("niah_multiquery", 3000), ("book_facts", 3000), ("book_cloze", 3000),
     ("niah_multikey", 12_000)],  # 12,000 tokens is longer than the sample book: the haystack wraps around
)  # fmt: skip
def test_num_tokens_hits_the_requested_length_with_a_real_tokenizer(
    task: str, num_tokens: int, book: str, smollm2_tokenizer
) -> None:
    ex = generate(task, 2, book, num_tokens=num_tokens, tokenizer=smollm2_tokenizer)
    got = count_tokens(ex.context, smollm2_tokenizer)
    assert abs(got - num_tokens) <= 0.05 * num_tokens, got
    assert ex.metadata["num_tokens"] == num_tokens
    check_evidence(ex, book)


def test_take_piece_starts_at_a_paragraph_boundary_and_has_the_length(book: str, smollm2_tokenizer) -> None:
    pieces = [take_piece(book, seed, length_chars=3000) for seed in range(10)]
    assert pieces[0] == take_piece(book, 0, length_chars=3000) and len(set(pieces)) >= 8  # two may share a paragraph
    for piece in pieces:
        assert 2900 <= len(piece) <= 3000
        start = (book + "\n\n" + book).index(piece)  # a piece that reaches the end goes on from the start
        assert start < len(book)
        assert start == 0 or book[start - 2 : start] == "\n\n" or re.search(r"[.!?][\"']*\s$", book[:start])
    tokens = take_piece(book, 1, num_tokens=500, tokenizer=smollm2_tokenizer)
    assert abs(count_tokens(tokens, smollm2_tokenizer) - 500) <= 25
    with pytest.raises(ValueError, match="exactly one"):
        take_piece(book, 0)
    with pytest.raises(ValueError, match="tokenizer"):
        take_piece(book, 0, num_tokens=10)


# ---------------------------------------------------------------------------------------------------------
# Haystack files and JSONL
# ---------------------------------------------------------------------------------------------------------


def test_load_haystack_reads_folders_with_bom_and_crlf(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_bytes("\ufeffSecond file.\r\nLine two.\r\n".encode())
    (tmp_path / "a.md").write_bytes(b"First file.\n")
    (tmp_path / "SOURCES.md").write_text("where the files came from")
    (tmp_path / "notes.json").write_text("{}")
    assert load_haystack(tmp_path) == "First file.\n\nSecond file.\nLine two."
    gutenberg = (
        "Header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nThe story.\nEnd of the Project Gutenberg EBook of X\nLicence"
    )
    (tmp_path / "g.txt").write_text(gutenberg)
    assert load_haystack(tmp_path / "g.txt") == "The story."
    assert load_haystack(SAMPLE_BOOK).startswith("Produced by") and "Project Gutenberg" not in load_haystack(SAMPLE_BOOK)
    with pytest.raises(FileNotFoundError):
        load_haystack(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyInputError):
        load_haystack(tmp_path / "empty")
    with pytest.raises(ValueError, match="looks like a path"):
        niah_single(0, "../shared/data/haystack", length_chars=1000)


def test_jsonl_round_trip(tmp_path: Path, book: str) -> None:
    examples = [generate(task, 1, book, length_chars=3000) for task in TASK_NAMES]
    path = tmp_path / "sub" / "tasks.jsonl"
    assert write_jsonl(iter(examples), path) == len(examples)
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(examples)
    lazy = read_jsonl(path)
    assert inspect.isgenerator(lazy)
    back = list(lazy)
    assert back == examples
    assert all(isinstance(e.answers, tuple) and all(isinstance(s, tuple) for s in e.evidence_spans) for e in back)
    assert LongContextExample.from_json(json.loads(examples[0].to_json())) == examples[0]


# ---------------------------------------------------------------------------------------------------------
# The real (copyrighted, not shipped) essay haystack from ../shared
# ---------------------------------------------------------------------------------------------------------


def test_needles_in_the_paul_graham_essay_haystack(essays: str) -> None:
    assert len(essays) > 600_000 and "Files in the concatenation" not in essays  # SOURCES.md is not haystack
    for task in ("passkey", "niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery"):
        kwargs = {"haystack": essays} if task == "passkey" else {}
        ex = (
            passkey(4, length_chars=30_000, haystack=essays)
            if task == "passkey"
            else TASKS[task](4, essays, length_chars=30_000, **kwargs)
        )
        assert ex == (
            passkey(4, length_chars=30_000, haystack=essays) if task == "passkey" else TASKS[task](4, essays, length_chars=30_000)
        )
        check_evidence(ex, essays)
        s, e = ex.evidence_spans[0]
        assert (ex.context[:s] + ex.context[e + 1 :])[:2000] in essays


# ---------------------------------------------------------------------------------------------------------
# LLM-written QA (FineWeb-LQA style)
# ---------------------------------------------------------------------------------------------------------


class WordQuizLLM:
    """Test double for a LlamaIndex-style LLM service (``.complete(prompt).text``), deterministic.

    It reads the passage and the number of pairs out of the prompt and asks for the passage's words, so
    every answer is checkable against the chunk. ``fail_on_call`` simulates the service going away;
    ``replies`` replaces the reply of given calls (1-based) to simulate malformed output.
    """

    def __init__(
        self,
        fail_on_call: int | None = None,
        replies: dict[int, str] | None = None,
        fence: bool = False,
        watch: Path | None = None,
    ) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.replies = replies or {}
        self.fence = fence
        self.watch = watch  # a file whose line count is recorded at each call (is the output flushed?)
        self.lines_on_disk: list[int] = []

    def reply(self, prompt: str) -> str:
        self.calls += 1
        if self.watch is not None:
            self.lines_on_disk.append(len(self.watch.read_bytes().splitlines()) if self.watch.exists() else 0)
        if self.calls == self.fail_on_call:
            raise ConnectionError("the LLM service went away")
        if self.calls in self.replies:
            return self.replies[self.calls]
        passage = prompt.split('"""')[1].strip()
        n = int(re.search(r"Write (\d+) question-answer pairs", prompt).group(1))
        words = re.findall(r"[A-Za-z]{4,}", passage)
        pairs = [
            {"question": f"Which is word {i + 1} of the passage that begins '{passage[:30]}'?", "answer": words[i]}
            for i in range(n)
        ]
        text = json.dumps({"pairs": pairs})
        return f"Here you are:\n```json\n{text}\n```\n" if self.fence else text

    def complete(self, prompt: str) -> SimpleNamespace:
        return SimpleNamespace(text=self.reply(prompt))


def documents(book: str, n: int = 3, size: int = 6000) -> list[tuple[str, str]]:
    return [(f"doc-{i}", book[i * size : (i + 1) * size]) for i in range(n)]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_qa_file(path: Path, docs: list[tuple[str, str]], chunk_chars: int, per_chunk: int) -> None:
    """Every chunk of every document is there once with ``per_chunk`` pairs, and the spans locate the answers."""
    lines = read_lines(path)
    texts = dict(docs)
    keys = [(r["doc_id"], r["chunk_index"], r["pair_index"]) for r in lines]
    assert len(keys) == len(set(keys)), "duplicate lines"
    expected = {(d, c, p) for d, t in docs for c in range(len(chunk_spans(t, chunk_chars))) for p in range(per_chunk)}
    assert set(keys) == expected
    for r in lines:
        start, end = r["context_span"]
        assert [start, end] == list(chunk_spans(texts[r["doc_id"]], chunk_chars)[r["chunk_index"]])
        assert r["answer"] in texts[r["doc_id"]][start:end] and r["question"] and r["num_pairs"] == per_chunk


def test_qa_generation_writes_pairs_for_every_chunk(tmp_path: Path, book: str) -> None:
    docs, llm, out = documents(book), WordQuizLLM(fence=True), tmp_path / "qa.jsonl"
    stats = generate_qa_jsonl(docs, llm, out, chunk_chars=2000, questions_per_chunk=2, seed=0)
    n_chunks = sum(len(chunk_spans(t, 2000)) for _, t in docs)
    assert n_chunks >= 6
    assert stats == QAGenerationStats(documents=3, chunks_total=n_chunks, chunks_generated=n_chunks, pairs_written=2 * n_chunks)
    assert llm.calls == n_chunks
    check_qa_file(out, docs, 2000, 2)
    # A finished file is not regenerated.
    again = generate_qa_jsonl(docs, llm, out, chunk_chars=2000, questions_per_chunk=2, seed=0)
    assert again.chunks_skipped == n_chunks and again.chunks_generated == 0 and llm.calls == n_chunks


def test_malformed_replies_are_skipped_counted_and_retried_on_rerun(tmp_path: Path, book: str) -> None:
    docs, out = documents(book), tmp_path / "qa.jsonl"
    bad = {
        2: "Sorry, I cannot help with that.",
        3: '{"pairs": [{"question": "No answer here?"}]}',
        5: '{"pairs": [{"question": "a", ',
    }
    stats = generate_qa_jsonl(docs, WordQuizLLM(replies=bad), out, chunk_chars=2000, questions_per_chunk=2)
    assert stats.malformed_replies == 3 and stats.chunks_generated == stats.chunks_total - 3
    assert len(read_lines(out)) == 2 * stats.chunks_generated
    retry = WordQuizLLM()
    rerun = generate_qa_jsonl(docs, retry, out, chunk_chars=2000, questions_per_chunk=2)
    assert retry.calls == 3 and rerun.chunks_generated == 3 and rerun.malformed_replies == 0
    check_qa_file(out, docs, 2000, 2)


@pytest.mark.parametrize(("chunk_chars", "fail_on_call"), [(10_000, 2), (2000, 5)])
def test_qa_generation_resumes_after_an_interruption(tmp_path: Path, book: str, chunk_chars: int, fail_on_call: int) -> None:
    docs, out = documents(book), tmp_path / "qa.jsonl"
    n_chunks = sum(len(chunk_spans(t, chunk_chars)) for _, t in docs)
    failing = WordQuizLLM(fail_on_call=fail_on_call, watch=out)
    with pytest.raises(ConnectionError):
        generate_qa_jsonl(docs, failing, out, chunk_chars=chunk_chars, questions_per_chunk=2)
    assert failing.lines_on_disk == [2 * k for k in range(fail_on_call)]  # each chunk's lines are on disk at once
    assert len(read_lines(out)) == 2 * (fail_on_call - 1)
    resumed = WordQuizLLM()
    stats = generate_qa_jsonl(docs, resumed, out, chunk_chars=chunk_chars, questions_per_chunk=2)
    assert stats.chunks_skipped == fail_on_call - 1 and resumed.calls == n_chunks - (fail_on_call - 1)
    check_qa_file(out, docs, chunk_chars, 2)


def test_qa_generation_repairs_a_half_written_chunk(tmp_path: Path, book: str) -> None:
    docs, out = documents(book), tmp_path / "qa.jsonl"
    generate_qa_jsonl(docs, WordQuizLLM(), out, chunk_chars=2000, questions_per_chunk=2)
    complete = out.read_text(encoding="utf-8")
    lines = complete.splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:20], encoding="utf-8")  # killed while writing the last pair
    llm = WordQuizLLM()
    stats = generate_qa_jsonl(docs, llm, out, chunk_chars=2000, questions_per_chunk=2)
    assert stats.incomplete_chunks_dropped == 1 and llm.calls == 1
    check_qa_file(out, docs, 2000, 2)
    assert sorted(out.read_text(encoding="utf-8").splitlines()) == sorted(complete.splitlines())


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"pairs": [{"question": "Q1?", "answer": "A1"}]}', [("Q1?", "A1")]),
        ('```json\n{"pairs": [{"question": "Q1?", "answer": "A1"}]}\n```', [("Q1?", "A1")]),
        ('Here [as asked]:\n```\n{"pairs": [{"question": "Q1?", "answer": "A1"}]}\n```\n(I wrote {1} pair.)', [("Q1?", "A1")]),
        ('Sure! Here they are:\n[{"question": "Q1?", "answer": 1883}, {"question": "Q2?", "answer": "A2"}]\nEnjoy.', [("Q1?", "1883"), ("Q2?", "A2")]),
        ('{"question": "Q1?", "answer": "A1"}', [("Q1?", "A1")]),
        ('{"pairs": [{"question": "Q1?", "answer": ""}, {"question": "Q2?", "answer": "A2"}, "junk"]}', [("Q2?", "A2")]),
    ],
)  # fmt: skip
def test_parse_qa_reply_accepts_what_models_write(reply: str, expected: list[tuple[str, str]]) -> None:
    assert parse_qa_reply(reply) == expected


@pytest.mark.parametrize(
    "reply", ["I cannot do that.", '{"pairs": []}', '{"pairs": [{"q": 1}]}', "[1, 2]", '{"pairs": ', "```\nnope\n```"]
)
def test_parse_qa_reply_rejects_replies_without_pairs(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_qa_reply(reply)


def test_call_llm_duck_types_langchain_replies() -> None:
    class ChatModel:  # LangChain chat-model shape: invoke -> message with .content (here as content blocks)
        def invoke(self, prompt: str) -> SimpleNamespace:
            return SimpleNamespace(content=[{"type": "text", "text": prompt.upper()}])

    class TextLLM:  # LangChain LLM shape: invoke -> str
        def invoke(self, prompt: str) -> str:
            return prompt[::-1]

    assert call_llm(ChatModel(), "abc") == "ABC"
    assert call_llm(TextLLM(), "abc") == "cba"
    assert call_llm(lambda p: p * 2, "ab") == "abab"
    with pytest.raises(TypeError, match="not an LLM"):
        call_llm(object(), "abc")


def test_qa_generation_with_real_langchain_fake_models(tmp_path: Path, book: str) -> None:
    fake_chat = pytest.importorskip("langchain_core.language_models.fake_chat_models", reason="langchain-core is not installed")
    fake = pytest.importorskip("langchain_core.language_models.fake", reason="langchain-core is not installed")
    docs = documents(book, n=2, size=1500)
    reply = json.dumps({"pairs": [{"question": "Who wrote Treasure Island?", "answer": "Robert Louis Stevenson"}]})
    for llm in (fake_chat.FakeListChatModel(responses=[reply]), fake.FakeListLLM(responses=["```json\n" + reply + "\n```"])):
        out = tmp_path / f"{type(llm).__name__}.jsonl"
        stats = generate_qa_jsonl(docs, llm, out, chunk_chars=2000, questions_per_chunk=1)
        assert stats.pairs_written == 2 and stats.malformed_replies == 0
        assert {r["answer"] for r in read_lines(out)} == {"Robert Louis Stevenson"}


def test_qa_generation_with_a_real_llama_index_custom_llm(tmp_path: Path, book: str) -> None:
    try:
        from llama_index.core.llms import CompletionResponse, CompletionResponseGen, CustomLLM, LLMMetadata
        from llama_index.core.llms.callbacks import llm_completion_callback
    except ImportError:
        pytest.skip("llama-index-core is not installed in this environment (pip install 'lcirc-plugins[llama-index]')")

    quiz = WordQuizLLM()

    class QuizLLM(CustomLLM):
        """A real LlamaIndex LLM whose completions are WordQuizLLM's JSON (no model can run in a unit test)."""

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(context_window=8192, num_output=512, model_name="word-quiz")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
            return CompletionResponse(text=quiz.reply(prompt))

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponseGen:
            yield CompletionResponse(text=quiz.reply(prompt), delta="")

    docs, out = documents(book, n=2), tmp_path / "qa.jsonl"
    stats = generate_qa_jsonl(docs, QuizLLM(), out, chunk_chars=3000, questions_per_chunk=3)
    assert stats.malformed_replies == 0 and stats.chunks_generated == quiz.calls >= 4
    check_qa_file(out, docs, 3000, 3)


def test_chunking_and_chunk_sampling_are_deterministic(tmp_path: Path, book: str) -> None:
    spans = chunk_spans(book, 2500)
    assert spans == chunk_spans(book, 2500)
    assert all(e - s <= 2500 * 5 // 4 for s, e in spans) and all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))
    covered = "".join(book[s:e] for s, e in spans)
    assert re.sub(r"\s", "", covered) == re.sub(r"\s", "", book)  # nothing but whitespace is left out

    def picked(seed: int) -> set[int]:
        out = tmp_path / f"pick-{seed}.jsonl"
        generate_qa_jsonl(
            [("book", book)], WordQuizLLM(), out, chunk_chars=2500, questions_per_chunk=1, seed=seed, max_chunks_per_doc=3
        )
        return {r["chunk_index"] for r in read_lines(out)}

    assert len(picked(0)) == 3 and picked(0) == picked(0) and any(picked(s) != picked(0) for s in (1, 2, 3))
    with pytest.raises(ValueError, match="twice"):
        generate_qa_jsonl(
            [("a", "Some words here. " * 20), ("a", "Other words there. " * 20)],
            WordQuizLLM(),
            tmp_path / "dup.jsonl",
            chunk_chars=500,
        )
