"""Compress ~100K and then ~1M tokens in one process and print the peak-RSS increase after each (JSON).

Run as a subprocess by tests/test_memory_scaling.py so that the peak belongs to this work alone.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from lcirc_plugins import LCIRCConfig, LCIRCModel
from lcirc_plugins.model.backbone import resolve_backbone


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    book = Path(sys.argv[1]).read_text(encoding="utf-8-sig")
    folder, gguf = resolve_backbone("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    torch.manual_seed(0)
    dim = 256
    backbone = AutoModelForCausalLM.from_config(
        LlamaConfig(vocab_size=len(tokenizer), hidden_size=dim, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4)
    )
    model = LCIRCModel(backbone, tokenizer, LCIRCConfig(segment_len=512, num_latents=16, perceiver_layers=1, gca_every=2))
    tokens_per_copy = len(tokenizer(book, add_special_tokens=False)["input_ids"])
    report = {"dim": dim, "baseline_mb": peak_mb()}
    for label, target in (("small", 100_000), ("large", 1_000_000)):
        text = "\n\n".join([book] * -(-target // tokens_per_copy))
        memory = model.compress(text)
        report[label] = {
            "num_tokens": memory.num_tokens,
            "peak_increase_mb": peak_mb() - report["baseline_mb"],
            "features_mb": memory.features.numel() * 4 / 2**20,
        }
        del text, memory
    print(json.dumps(report))


if __name__ == "__main__":
    main()
