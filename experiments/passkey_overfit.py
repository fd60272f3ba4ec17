"""Diagnostic: can the adapter fit 8 passkey examples (same question, different keys)?

Only the memory can tell the examples apart, so a loss near 0 proves that gradients reach the compressor
through the gated cross-attention and that the memory path can carry the digits; a plateau in real
training is then a generalisation problem, not a broken path.

Usage: .venv/bin/python experiments/passkey_overfit.py LR GATE_INIT SEGMENT_LEN   (e.g. 3e-4 0.1 64)
"""

import sys
import time

import torch

from lcirc_plugins.model.config import LCIRCConfig
from lcirc_plugins.model.lcirc_model import LCIRCModel
from lcirc_plugins.training.config import TrainConfig
from lcirc_plugins.training.data import ExampleStream
from lcirc_plugins.training.trainer import LCIRCTrainingModule

torch.manual_seed(0)
lr = float(sys.argv[1])
gate = float(sys.argv[2])
seglen = int(sys.argv[3])
cfg = TrainConfig(
    stage="qa",
    data="synthetic:passkey",
    adapter={
        "segment_len": 512,
        "max_segment_len": 1024,
        "num_latents": 16,
        "perceiver_layers": 2,
        "ffn_mult": 1.0,
        "gca_layers": [0, 10, 20, 29],
        "query_dependent": True,
        "gate_init": gate,
    },
    min_train_segment_len=seglen,
    max_train_segment_len=seglen,
    max_segments=1,
    lr=lr,
    output_dir="runs/probes/overfit",
    resume=False,
    bptt="full",
)
model = LCIRCModel.from_backbone("smollm2-135m-instruct", LCIRCConfig(**cfg.adapter))
model.train()
stream = ExampleStream(model.tokenizer, cfg, "train")
examples = [next(stream) for _ in range(8)]
print([len(e.segments) for e in examples], [model.tokenizer.decode(e.input_ids[-7:]) for e in examples[:2]])
mod = LCIRCTrainingModule(model, cfg)
opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
t = time.time()
for step in range(200):
    tot = 0
    for e in examples:
        loss = mod(e)
        loss.backward()
        tot += loss.item()
    gn = {
        n: p.grad.norm().item()
        for n, p in model.adapter.named_parameters()
        if p.grad is not None and ("to_kv" in n or "initial" in n)
    }
    torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    if step % 10 == 0:
        print(step, round(tot / 8, 3), round(time.time() - t), {k: f"{v:.1e}" for k, v in list(gn.items())[:3]}, flush=True)
