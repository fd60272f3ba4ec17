"""Question/answer pairs for long documents written by an LLM, in the manner of FineWeb-LQA.

Why: the QD-LCIRC paper built its long-context QA training set (FineWeb-LQA) by cutting long FineWeb-Edu
documents into chunks and asking a large model (Llama-3.1-70B) to write question/answer pairs about each
chunk; the model then learns to answer them with the *whole* document as context. This module does the
same with whatever model the user has, through LlamaIndex or LangChain, without importing either: any
object with ``.complete(prompt)`` (a LlamaIndex LLM; the reply's ``.text`` is used), ``.invoke(prompt)``
(a LangChain LLM or chat model; a str or a message's ``.content``) or a plain ``callable(prompt) -> str``.

Generation is slow and costs money, so it is resumable: every QA pair is one JSONL line, flushed as it is
written, and a rerun reads the file, drops a half-written tail, and skips the chunks that are done.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcirc_plugins.data.synthetic import derive_seed

__all__ = ["DEFAULT_QA_PROMPT", "QAGenerationStats", "call_llm", "chunk_spans", "generate_qa_jsonl", "parse_qa_reply"]

DEFAULT_QA_PROMPT = """You write reading-comprehension questions about a passage of a long document.
Write {n} question-answer pairs about the passage below. Each question must be answerable from the passage
alone, must be specific enough to make sense without seeing the passage (name people, places, things), and
its answer must be short (a few words or one sentence) and taken from the passage.

Reply with JSON only, no other text, exactly in this format:
{{"pairs": [{{"question": "...", "answer": "..."}}]}}

Passage:
\"\"\"
{chunk}
\"\"\"
"""

_FENCE = re.compile(r"```[A-Za-z]*\s*\n?(.*?)```", re.DOTALL)


@dataclass
class QAGenerationStats:
    """What a run did; ``malformed_replies`` counts chunks whose reply held no usable JSON pair."""

    documents: int = 0
    chunks_total: int = 0
    chunks_skipped: int = 0  # already in the file from an earlier run
    chunks_generated: int = 0
    pairs_written: int = 0
    malformed_replies: int = 0
    incomplete_chunks_dropped: int = 0  # half-written chunks of an interrupted run, regenerated


def chunk_spans(text: str, chunk_chars: int) -> list[tuple[int, int]]:
    """Cut ``text`` into ``(start, end)`` chunks of at most ~``chunk_chars`` characters.

    Cuts go at a paragraph break, else a sentence end, else a space in the second half of the window, so
    chunks are readable passages. Deterministic: chunk indices stay valid across resumed runs.
    """
    if chunk_chars < 100:
        raise ValueError("chunk_chars must be at least 100")
    spans: list[tuple[int, int]] = []
    start = _skip_space(text, 0)
    while start < len(text):
        end = len(text)
        if len(text) - start > chunk_chars * 5 // 4:  # else take the rest rather than leave a scrap
            window = text[start : start + chunk_chars]
            half = chunk_chars // 2
            for pattern in (r"\n[ \t]*\n", r"[.!?][\"'\u2019\u201d)]*\s", r"\s"):
                cuts = [m.end() for m in re.finditer(pattern, window) if m.end() >= half]
                if cuts:
                    end = start + cuts[-1]
                    break
            else:
                end = start + chunk_chars
        stripped = end
        while stripped > start and text[stripped - 1].isspace():
            stripped -= 1
        if stripped > start:
            spans.append((start, stripped))
        start = _skip_space(text, end)
    return spans


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def call_llm(llm: Any, prompt: str) -> str:
    """The text of ``llm``'s reply to ``prompt``, whatever kind of LLM it is (found by duck typing)."""
    if callable(getattr(llm, "complete", None)):  # LlamaIndex LLM -> CompletionResponse(.text)
        reply = llm.complete(prompt)
        reply = getattr(reply, "text", reply)
    elif callable(getattr(llm, "invoke", None)):  # LangChain LLM -> str; chat model -> AIMessage(.content)
        reply = llm.invoke(prompt)
        reply = getattr(reply, "content", reply)
        if isinstance(reply, list):  # content blocks: [{"type": "text", "text": ...}, ...] or strings
            reply = "".join(b if isinstance(b, str) else str(b.get("text", "")) if isinstance(b, dict) else "" for b in reply)
    elif callable(llm):
        reply = llm(prompt)
    else:
        raise TypeError(
            f"{type(llm).__name__} is not an LLM: it needs .complete(prompt) (LlamaIndex), .invoke(prompt) (LangChain) or __call__"
        )
    if not isinstance(reply, str):
        raise TypeError(f"{type(llm).__name__} replied with {type(reply).__name__}, not text")
    return reply


def parse_qa_reply(reply: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs of a reply in the prompt's JSON format; raises ``ValueError`` if none.

    Tolerates what models do around JSON: code fences, prose before or after, a bare list of pairs, a
    single pair object, numbers as answers. Pairs without a non-empty question and answer are dropped.
    """
    text = reply.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        opens = [i for i in (text.find("{"), text.find("[")) if i >= 0]
        close = max(text.rfind("}"), text.rfind("]"))
        if not opens or close < min(opens):
            raise ValueError("no JSON in the reply") from None
        try:
            data = json.loads(text[min(opens) : close + 1])
        except json.JSONDecodeError as exc:
            raise ValueError(f"the reply's JSON does not parse: {exc}") from None
    if isinstance(data, dict):
        items = data.get("pairs", data.get("qa_pairs", [data] if "question" in data else None))
    else:
        items = data
    if not isinstance(items, list):
        raise ValueError('the reply is not {"pairs": [...]}')  # noqa: TRY004 - a malformed reply, as everywhere here
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        question, answer = item.get("question"), item.get("answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if isinstance(question, str) and isinstance(answer, str) and question.strip() and answer.strip():
            pair = (question.strip(), answer.strip())
            if pair not in pairs:
                pairs.append(pair)
    if not pairs:
        raise ValueError("the reply has no pair with a question and an answer")
    return pairs


def _completed_chunks(path: Path) -> tuple[set[tuple[str, int]], int]:
    """Chunks fully written by earlier runs; repairs the file after an interruption.

    A run killed mid-write leaves a partial last line (cut off) or only some pairs of a chunk (their lines
    are removed so the chunk is generated again as a whole). Returns (done chunks, incomplete dropped).
    """
    if not path.exists():
        return set(), 0
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]  # drop the half-written line
    lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
    seen: dict[tuple[str, int], set[int]] = {}
    expected: dict[tuple[str, int], int] = {}
    records = []
    for line_no, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {line_no} is not JSON ({exc}); fix or move the file to resume") from None
        key = (str(record["doc_id"]), int(record["chunk_index"]))
        records.append((key, line))
        seen.setdefault(key, set()).add(int(record.get("pair_index", 0)))
        expected[key] = int(record.get("num_pairs", 1))
    done = {key for key, indices in seen.items() if len(indices) >= expected[key]}
    kept = [line for key, line in records if key in done]
    if len(kept) != len(lines) or len(data) != path.stat().st_size:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return done, len(seen) - len(done)


def generate_qa_jsonl(
    documents: Iterable[tuple[str, str]],
    llm: Any,
    out_path: str | os.PathLike[str],
    *,
    chunk_chars: int = 4000,
    questions_per_chunk: int = 3,
    seed: int = 0,
    max_chunks_per_doc: int | None = None,
    prompt_template: str = DEFAULT_QA_PROMPT,
) -> QAGenerationStats:
    """Ask ``llm`` for ``questions_per_chunk`` QA pairs per chunk of each ``(doc_id, text)``; append JSONL.

    Each line is ``{"doc_id", "chunk_index", "context_span": [start, end], "question", "answer",
    "pair_index", "num_pairs"}``; ``context_span`` locates the chunk in the document, whose full text is
    the long context at training time. Rerunning with the same arguments resumes: chunks already in
    ``out_path`` are not asked again. A reply without usable JSON is counted in ``malformed_replies`` and
    nothing is written for that chunk (a rerun asks again). ``seed`` picks which chunks of a document are
    used when ``max_chunks_per_doc`` is set (per document, so the pick survives a restart). Exceptions
    raised by the LLM propagate: what was written so far is kept for the next run.
    """
    if questions_per_chunk < 1:
        raise ValueError("questions_per_chunk must be at least 1")
    if "{chunk}" not in prompt_template or "{n}" not in prompt_template:
        raise ValueError("prompt_template needs {chunk} and {n} fields")
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done, dropped = _completed_chunks(path)
    stats = QAGenerationStats(incomplete_chunks_dropped=dropped)
    seen_ids: set[str] = set()
    with path.open("a", encoding="utf-8") as out:
        for doc_id, text in documents:
            doc_id = str(doc_id)
            if doc_id in seen_ids:
                raise ValueError(f"document id {doc_id!r} appears twice; ids must be unique for resuming to work")
            seen_ids.add(doc_id)
            stats.documents += 1
            spans = list(enumerate(chunk_spans(text, chunk_chars)))
            if max_chunks_per_doc is not None and len(spans) > max_chunks_per_doc:
                rng = random.Random(derive_seed(seed, doc_id))
                spans = sorted(rng.sample(spans, max_chunks_per_doc))
            for chunk_index, (start, end) in spans:
                stats.chunks_total += 1
                if (doc_id, chunk_index) in done:
                    stats.chunks_skipped += 1
                    continue
                reply = call_llm(llm, prompt_template.format(chunk=text[start:end], n=questions_per_chunk))
                try:
                    pairs = parse_qa_reply(reply)[:questions_per_chunk]
                except ValueError:
                    stats.malformed_replies += 1
                    continue
                for pair_index, (question, answer) in enumerate(pairs):
                    record = {
                        "doc_id": doc_id,
                        "chunk_index": chunk_index,
                        "context_span": [start, end],
                        "question": question,
                        "answer": answer,
                        "pair_index": pair_index,
                        "num_pairs": len(pairs),
                    }
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.flush()
                stats.chunks_generated += 1
                stats.pairs_written += len(pairs)
                done.add((doc_id, chunk_index))
    return stats
