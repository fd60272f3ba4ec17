"""Time to first answer (issue 18): `lcirc --help`, `lcirc ask` on a saved memory and the app's first page.

Every measurement is a fresh process, timed from its start to its end (or, for the app, to the first HTTP
200 of its page), side by side in one run:

- **before**: the code before the converted-backbone cache (``--before REV``, default ``2769aa6``, extracted with
  ``git archive`` into a temporary folder and put first on ``PYTHONPATH``), which converts the GGUF on every start;
- **cold**: this code with an empty cache folder (the GGUF is converted, then written to the cache);
- **warm**: this code again, reading the cache.

Each variant asks about its own memory of a 16K-token excerpt of Treasure Island (the untrained adapter's
fingerprint differs between the two versions). The section between the ``startup`` markers of
``benchmarks/RESULTS.md`` is replaced; the rest of the file is left as it is.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/startup.py            # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from report_sections import write_section

from lcirc_plugins.data.shared import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "startup"
BOOKS = [shared_data_dir() / "books" / "stevenson-treasure-island.txt", ROOT / "tests" / "data" / "sample-book.txt"]
EXCERPT_CHARS = 64_000  # about 16K SmolLM2 tokens
QUESTION = "Who is the captain?"
TARGETS = {"ask_warm": 8.0, "help_now": 1.5, "app_warm": 15.0}


def run_timed(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall seconds of one fresh process; a failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    result = subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def app_page_seconds(env: dict[str, str], port: int, data_dir: Path, timeout: float = 300.0) -> float:
    """Start ``python -m lcirc_plugins.app`` and time it until its page answers 200; then stop it."""
    argv = [sys.executable, "-m", "lcirc_plugins.app", "--port", str(port), "--data-dir", str(data_dir)]
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - start < timeout:
            if process.poll() is not None:
                raise SystemExit(f"the app exited early:\n{process.stderr.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the app did not serve its page within {timeout:.0f} s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def extract(revision: str, target: Path) -> Path:
    """The package as it was at ``revision`` (``git archive``: no worktree, nothing in .git changes)."""
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "lcirc_plugins"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def measure(before: str, work: Path, port: int) -> dict[str, float]:
    book = next(p for p in BOOKS if p.is_file())
    excerpt = work / "excerpt.txt"
    excerpt.write_text(book.read_text(encoding="utf-8-sig")[:EXCERPT_CHARS], encoding="utf-8")
    base = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TQDM_DISABLE": "1"}
    old_code = extract(before, work / "before")
    os.chdir(work)  # `python -m` puts the working folder first on sys.path: not this checkout's package
    variants = {
        "before": {**base, "PYTHONPATH": str(old_code), "LCIRC_CACHE_DIR": str(work / "unused-cache")},
        "now": {**base, "LCIRC_CACHE_DIR": str(work / "cache")},
    }
    lcirc = [sys.executable, "-m", "lcirc_plugins"]
    where = [sys.executable, "-c", "import lcirc_plugins; print(lcirc_plugins.__file__)"]
    found = subprocess.run(where, env=variants["before"], capture_output=True, text=True, check=True).stdout
    assert found.startswith(str(old_code)), f"the 'before' run would import {found}"
    times: dict[str, float] = {}
    for name, env in variants.items():
        times[f"help_{name}"] = min(run_timed([*lcirc, "--help"], env) for _ in range(3))
        memory = work / f"{name}.memory.safetensors"
        times[f"compress_{name}"] = run_timed([*lcirc, "compress", str(excerpt), "-o", str(memory)], env)
        ask = [*lcirc, "ask", str(memory), QUESTION, "--max-new-tokens", "16"]
        if name == "before":
            times["ask_before"] = run_timed(ask, env)
            times["app_before"] = app_page_seconds(env, port, work / "app-before")
            continue
        shutil.rmtree(work / "cache")  # the compress run filled it: start the ask cold
        times["ask_cold"] = run_timed(ask, env)
        times["ask_warm"] = min(run_timed(ask, env) for _ in range(3))
        shutil.rmtree(work / "cache")
        times["app_cold"] = app_page_seconds(env, port, work / "app-now")
        times["app_warm"] = min(app_page_seconds(env, port, work / "app-now") for _ in range(2))
    return times


def report(times: dict[str, float], before: str) -> str:
    ok = {key: times[key] <= limit for key, limit in TARGETS.items()}
    rows = [
        ("`lcirc --help`", times["help_before"], None, times["help_now"], f"<= {TARGETS['help_now']} s", ok["help_now"]),
        (
            "`lcirc ask` on a saved memory (16 new tokens)",
            times["ask_before"],
            times["ask_cold"],
            times["ask_warm"],
            f"warm <= {TARGETS['ask_warm']} s",
            ok["ask_warm"],
        ),
        (
            "app serving its page",
            times["app_before"],
            times["app_cold"],
            times["app_warm"],
            f"warm <= {TARGETS['app_warm']} s",
            ok["app_warm"],
        ),
        ("`lcirc compress`, 16K tokens (cache written)", times["compress_before"], times["compress_now"], None, "", None),
    ]
    lines = [
        "## Time to first answer (issue 18: converted-backbone cache, lazy imports)",
        "",
        (
            f"`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/startup.py`, {time.strftime('%Y-%m-%d')}, Python "
            f"{platform.python_version()}, {os.cpu_count()} cores (shared with other work while measured). Each number is "
            "one fresh process, start to exit (the app: start to the first HTTP 200 of its page); `lcirc --help` and the "
            "warm `ask` are the best of 3, the warm app the best of 2. "
            f"**before** is the code at `{before}` (the GGUF backbone converted on every start); **cold** is this code "
            "with an empty cache (convert, then write the cache); **warm** reads the cache."
        ),
        "",
        "| | before | cold cache | warm cache | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for label, old, cold, warm, target, met in rows:
        verdict = "-" if met is None else "yes" if met else "NO"
        lines.append(f"| {label} | {cell(old)} | {cell(cold)} | {cell(warm)} | {target} | {verdict} |")
    lines += [
        "",
        f"Raw seconds: `{json.dumps({k: round(v, 2) for k, v in times.items()})}`.",
        "",
        (
            f"With a cold cache, `lcirc ask` took {times['ask_cold'] - times['ask_before']:+.1f} s and the app "
            f"{times['app_cold'] - times['app_before']:+.1f} s against before, writing the 540 MB cache included "
            "(target: no slower than before plus the write). `lcirc compress` ran on a cold cache too."
        ),
    ]
    return "\n".join(lines)


def cell(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="2769aa6", help="the revision to compare with (default: before the cache)")
    parser.add_argument("--port", type=int, default=7899)
    parser.add_argument("--no-write", action="store_true", help="print the section, do not touch RESULTS.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lcirc-startup-") as folder:
        times = measure(args.before, Path(folder), args.port)
    print(json.dumps({k: round(v, 2) for k, v in times.items()}, indent=1))
    section = report(times, args.before)
    print(section)
    if not args.no_write:
        write_section(section, RESULTS, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
