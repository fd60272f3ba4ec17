"""What reading a memory costs per decoded token when nothing else runs: the floor of the layer readers' answer.

    python experiments/reading_bandwidth_probe.py [--rows 5088] [--layers 22] [--repeats 30]

For one decoded token (3 key/value heads, 3 query heads each, head_dim 64: SmolLM2's shape) and each of ``--layers``
distinct layers' keys and values over ``--rows`` memory rows (distinct, so they come from RAM, not the CPU's caches,
as in a real answer): logits, softmax and the values read. Timed with keys row-major and transposed, in float32 and
bf16. Findings, "What answering costs with the shipped adapter".
"""

from __future__ import annotations

import argparse
import time

import torch


def time_reading(keys: list[torch.Tensor], values: list[torch.Tensor], transposed: bool, repeats: int) -> float:
    """Seconds per decoded token over every layer's keys and values."""
    query = torch.randn(1, 3, 3, 64).to(values[0].dtype)

    def token() -> None:
        for k, v in zip(keys, values):
            scores = (query @ (k if transposed else k.transpose(-1, -2))).float()
            scores.softmax(dim=-1).to(v.dtype) @ v

    for _ in range(3):
        token()
    start = time.perf_counter()
    for _ in range(repeats):
        token()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5088)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    keys = [torch.randn(1, 3, args.rows, 64) for _ in range(args.layers)]
    values = [torch.randn(1, 3, args.rows, 64) for _ in range(args.layers)]
    transposed = [k.transpose(-1, -2).contiguous() for k in keys]
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        vs = [v.to(dtype) for v in values]
        size = sum(k.numel() * k.element_size() * 2 for k in vs) / 2**20
        for layout, ks, is_transposed in (("row-major keys", keys, False), ("transposed keys", transposed, True)):
            seconds = time_reading([k.to(dtype) for k in ks], vs, is_transposed, args.repeats)
            print(f"{name}, {layout}: {seconds * 1e3:.1f} ms per token ({size:.0f} MiB, {size / 1024 / seconds:.1f} GiB/s, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
