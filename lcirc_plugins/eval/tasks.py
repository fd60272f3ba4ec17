"""Tasks: perplexity of a final window by total context length, needle / passkey grids, and QA benchmarks
(LongBench, InfiniteBench, L-Eval records from :mod:`.benchmarks`, scored by their official metrics).

Each returns plain dict rows (JSON values only). Every row records its cost: ``wall_time_s``,
``tokens_per_s`` (context tokens read per second) and ``peak_rss_mb`` (the process's peak resident set so
far, from ``getrusage``), besides the analytic ``flops``. Those are the only fields that differ between
two runs with the same seed (:data:`TIMING_FIELDS`).
"""

from __future__ import annotations

import random
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tqdm.auto import tqdm

from ..data.synthetic import NEEDLE_TASKS
from .datasets import QARecord, score
from .metrics import substring_match
from .systems import ContextTooLongError, System, perplexity

TIMING_FIELDS = ("wall_time_s", "tokens_per_s", "peak_rss_mb")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _timed(call: Callable[..., Any], tokens: int, *args: Any) -> tuple[Any, dict[str, float]]:
    start = time.perf_counter()
    value = call(*args)
    elapsed = time.perf_counter() - start
    return value, {
        "wall_time_s": round(elapsed, 4),
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None,
        "peak_rss_mb": peak_rss_mb(),
    }


def _skipped(err: Exception) -> dict[str, Any]:
    """The cost fields of a row a system could not run, with the reason."""
    return {"skipped": str(err), "wall_time_s": None, "tokens_per_s": None, "peak_rss_mb": peak_rss_mb()}


def _tokenizer(systems: Sequence[System], tokenizer: Any) -> Any:
    if tokenizer is not None:
        return tokenizer
    for system in systems:
        if getattr(system, "tokenizer", None) is not None:
            return system.tokenizer
    raise ValueError("pass tokenizer= (no system has one)")


def _bar(items: Iterable[Any], total: int, desc: str, progress: bool) -> Iterable[Any]:
    return tqdm(items, total=total, desc=desc, disable=not progress)


def perplexity_by_length(
    systems: Sequence[System],
    text: str,
    lengths: Sequence[int],
    target_len: int = 64,
    seed: int = 0,
    *,
    tokenizer: Any = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Perplexity of the last ``target_len`` tokens of a ``length``-token piece of ``text`` given the rest.

    The piece starts at a seeded random token offset; a text shorter than the longest length is repeated
    (noted in the row as ``repeated``). One row per (length, system); a system that cannot read the
    length gets ``nll = None`` and the reason in ``skipped``.
    """
    tok = _tokenizer(systems, tokenizer)
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError("the text has no tokens")
    rng = random.Random(seed)
    rows = []
    jobs = [(length, system) for length in lengths for system in systems]
    pieces: dict[int, tuple[list[int], bool]] = {}
    for length, system in _bar(jobs, len(jobs), "perplexity", progress):
        if length <= target_len:
            raise ValueError(f"length {length} must exceed target_len {target_len}")
        if length not in pieces:
            repeated = len(ids) < length
            source = ids * (length // len(ids) + 2) if repeated else ids
            start = rng.randrange(0, len(source) - length + 1)
            pieces[length] = (source[start : start + length], repeated)
        piece, repeated = pieces[length]
        context, target = piece[:-target_len], piece[-target_len:]
        row: dict[str, Any] = {
            "task": "perplexity",
            "system": system.name,
            "length": length,
            "target_len": target_len,
            "seed": seed,
            "repeated": repeated,
        }
        try:
            nll, cost = _timed(system.nll, length, context, target)
            row.update(nll=round(nll, 6), perplexity=round(perplexity(nll), 4), skipped=None, **cost)
        except ContextTooLongError as err:
            row.update(nll=None, perplexity=None, **_skipped(err))
        row["flops"] = system.flops(length)
        rows.append(row)
    return rows


def needle_grid(
    systems: Sequence[System],
    lengths: Sequence[int],
    depths: Sequence[float],
    seed: int = 0,
    task: str = "passkey",
    haystack: str | None = None,
    *,
    tokenizer: Any = None,
    max_new_tokens: int = 16,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Accuracy by context length x needle depth (one example per cell, seeded by the cell index).

    ``task`` is one of ``NEEDLE_TASKS``: ``"passkey"`` (filler text, or ``haystack`` when given) or
    ``"niah_single"`` (needs ``haystack``). Scoring is :func:`substring_match` with the example's ``metadata["match"]``.
    """
    if task not in NEEDLE_TASKS:
        raise ValueError(f"unknown needle task {task!r}; use one of {', '.join(map(repr, NEEDLE_TASKS))}")
    if haystack is None and task != "passkey":
        raise ValueError(f"{task} needs a haystack text")
    generate, text = NEEDLE_TASKS[task], ({} if haystack is None else {"haystack": haystack})
    tok = _tokenizer(systems, tokenizer)
    rows = []
    cells = [(i, length, depth) for i, (length, depth) in enumerate((l, d) for l in lengths for d in depths)]
    for index, length, depth in _bar(cells, len(cells), task, progress):
        cell_seed = seed * 1_000_003 + index
        example = generate(cell_seed, num_tokens=length, tokenizer=tok, depth=depth, **text)
        for system in systems:
            row: dict[str, Any] = {
                "task": task,
                "system": system.name,
                "length": length,
                "depth": depth,
                "seed": cell_seed,
                "answer": example.answer,
            }
            try:
                prediction, cost = _timed(system.answer, length, example.context, example.question, max_new_tokens)
                score = substring_match(prediction, example.answers, example.metadata.get("match", "any"))
                row.update(prediction=prediction, accuracy=score, skipped=None, **cost)
            except ContextTooLongError as err:
                row.update(prediction=None, accuracy=None, **_skipped(err))
            row["flops"] = system.flops(length)
            rows.append(row)
    return rows


def qa_benchmark(
    systems: Sequence[System],
    records: Sequence[QARecord],
    *,
    max_new_tokens: int | None = None,
    tokenizer: Any = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Every record answered by every system (greedy), scored by the record's benchmark metric.

    Each record is generated with its benchmark's own answer budget, capped at ``max_new_tokens`` when given
    (summaries get 512 to 1,200 tokens officially, too many for a CPU run). ``length`` is the context's
    token count, the basis of ``flops`` and ``tokens_per_s``; ``score`` is in [0, 1], None when skipped.
    """
    tok = _tokenizer(systems, tokenizer)
    rows = []
    for record in _bar(records, len(records), "qa", progress):
        length = len(tok(record.context, add_special_tokens=False)["input_ids"])
        budget = min(record.max_new_tokens, max_new_tokens) if max_new_tokens else record.max_new_tokens
        for system in systems:
            row: dict[str, Any] = {
                "task": "qa",
                "benchmark": record.benchmark,
                "dataset": record.dataset,
                "id": record.id,
                "metric": record.metric,
                "system": system.name,
                "length": length,
                "max_new_tokens": budget,
                "answers": list(record.answers),
            }
            try:
                prediction, cost = _timed(system.answer, length, record.context, record.question, budget)
                row.update(prediction=prediction, score=round(score(record, prediction), 6), skipped=None, **cost)
            except ContextTooLongError as err:
                row.update(prediction=None, score=None, **_skipped(err))
            row["flops"] = system.flops(length)
            rows.append(row)
    return rows


def strip_timing(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the fields that vary between identical runs (for reproducibility checks)."""
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]
