"""Analytic FLOPs against a hand calculation and against the real modules' weight counts."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, LlamaConfig

from lcirc_plugins.eval.flops import AdapterShape, DecoderShape, decoder_flops, flops_full, flops_lcirc, flops_truncated

TINY = DecoderShape(hidden=4, layers=1, intermediate=8, heads=2, kv_heads=1, head_dim=2, vocab=10)
ADAPTER = AdapterShape(hidden=4, segment_len=2, num_latents=1, perceiver_layers=1, head_dim=2, ffn_mult=1.0, gca_blocks=1)


def test_decoder_flops_by_hand():
    # per token: q 4*2*2=16, k+v 2*4*1*2=16, o 2*2*4=16, gated MLP 3*4*8=96 -> 144; LM head 4*10=40 -> P=184
    assert TINY.token_macs() == 184
    # attention over T=3: layers * 2*H*h * T(T+1)/2 = 1 * 8 * 6 = 48
    assert TINY.attention_macs(3) == 48
    # F = 2 * (3*184 + 48) = 1200
    assert decoder_flops(TINY, 3) == 1200
    assert flops_truncated(TINY, 10, 3) == 1200
    assert flops_full(TINY, 3) == 1200


def test_lcirc_flops_by_hand():
    # N=6, M=3: window 3 tokens (1200 FLOPs), compressed 3 tokens = 2 segments (2 + 1 tokens), K=1 -> 2 memory vectors
    # adapter inner W = (4//2)*2 = 4, FFN F = 4
    # perceiver layer, L=2 (context L+K=3): q 1*4*4=16, kv 3*4*8=96, attn 2*1*3*4=24, out 16, ffn 2*1*4*4=32 -> 184
    # perceiver layer, L=1 (context 2):     16 + 2*4*8=64 + 2*1*2*4=16 + 16 + 32 -> 144; compression = 2*(184+144) = 656
    # GCA, T=3, 2 memory vectors: kv 2*4*8=64, q 3*4*4=48, attn 2*3*2*4=48, out 48, ffn 2*3*4*4=96 -> 304; 2*304 = 608
    assert flops_lcirc(TINY, ADAPTER, 6, 3) == 1200 + 656 + 608
    # nothing to compress: LCIRC costs what the backbone does
    assert flops_lcirc(TINY, ADAPTER, 3, 3) == 1200


def test_layer_reader_flops_by_hand():
    layer = AdapterShape(hidden=4, segment_len=2, num_latents=1, perceiver_layers=1, head_dim=2, ffn_mult=1.0, gca_blocks=1,
                         reads_layers=True, tokens_per_slot=2)  # fmt: skip
    # N=6, M=3: window 3 tokens (1200). Compressed 3 tokens = segments of 2 and 1, each read by a frozen forward without
    # the LM head (P - d*V = 144): 2*(2*144 + 8*3) = 624 and 2*(144 + 8*1) = 304 -> 928.
    # Slots: ceil(2/2) + ceil(1/2) = 2. One reading layer, T=3: kv 2*4*2*1*2=32, q 3*4*4=48, attn 2*3*2*4=48, o 3*4*4=48
    # -> 176; 2*176 = 352.
    assert flops_lcirc(TINY, layer, 6, 3) == 1200 + 928 + 352


def test_full_attention_grows_quadratically_and_lcirc_linearly():
    shape = DecoderShape.from_hf(
        LlamaConfig(
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            vocab_size=32000,
        )
    )
    adapter = AdapterShape(
        hidden=2048, segment_len=512, num_latents=32, perceiver_layers=2, head_dim=64, ffn_mult=2.0, gca_blocks=6
    )
    full = [flops_full(shape, n) for n in (32_768, 65_536, 131_072)]
    lcirc = [flops_lcirc(shape, adapter, n, 1024) for n in (32_768, 65_536, 131_072)]
    assert full[2] / full[1] > 2.2 and full[1] / full[0] > 2.1  # the N^2 term dominates at long lengths
    assert lcirc[2] / lcirc[1] < 2.0  # compression is linear; the window cost is fixed
    assert all(l < f for l, f in zip(lcirc, full))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_token_macs_equal_linear_weights_of_the_real_model(family):
    from transformers import AutoModelForCausalLM

    config = (
        LlamaConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        if family == "llama"
        else GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    )
    model = AutoModelForCausalLM.from_config(config)
    # every weight matrix except the embeddings is used once per token (GPT-2 uses Conv1D, LM head tied)
    weights = sum(
        p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "wte" not in n and "wpe" not in n and "embed" not in n
    )
    if family == "gpt2" or config.tie_word_embeddings:
        weights += 32 * 100
    assert DecoderShape.from_hf(config).token_macs() == weights
    torch.manual_seed(0)
