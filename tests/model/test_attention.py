"""The adapter's attention building blocks: the absorbed (projection-free) form equals plain cross-attention."""

from __future__ import annotations

import pytest
import torch

from lcirc_plugins.model.attention import CrossAttention
from lcirc_plugins.model.perceiver import PerceiverLayer


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("with_extra", [False, True])
def test_absorbed_attention_equals_attention_over_projected_context(with_mask: bool, with_extra: bool):
    torch.manual_seed(0)
    attn = CrossAttention(48, 48, 8).double()
    x, context = torch.randn(2, 3, 48, dtype=torch.float64), torch.randn(2, 20, 48, dtype=torch.float64)
    mask = torch.rand(2, 20) > 0.3 if with_mask else None
    extra = attn.project_context(x) if with_extra else None
    k, v = attn.project_context(context)
    full_mask = mask
    if extra is not None:
        k, v = torch.cat([k, extra[0]], dim=2), torch.cat([v, extra[1]], dim=2)
        if mask is not None:
            full_mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.bool)], dim=1)
    probs: list[torch.Tensor] = []
    absorbed = attn.attend_absorbed(x, context, mask, extra, probs)
    torch.testing.assert_close(absorbed, attn(x, (k, v), full_mask), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(probs[0], attn.weights(x, (k, v), full_mask)[..., :20], rtol=1e-10, atol=1e-10)


def test_absorbing_is_chosen_only_when_it_costs_less():
    attn = CrossAttention(576, 576, 64)  # 9 heads, inner width 576
    assert attn.absorbs_context(16) and attn.absorbs_context(63)
    assert not attn.absorbs_context(64)


@pytest.mark.parametrize("num_latents", [4, 40])  # absorbed path, and the projected one
def test_perceiver_layer_paths_agree(num_latents: int):
    torch.manual_seed(1)
    layer = PerceiverLayer(32, 8, 1.0, self_attend=True).double()  # 4 heads x 8: absorbs below 8 latents
    latents, inputs = torch.randn(2, num_latents, 32, dtype=torch.float64), torch.randn(2, 30, 32, dtype=torch.float64)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 25:] = False
    absorbed = layer.attn.absorbs_context(num_latents)
    assert absorbed == (num_latents == 4)
    weights: list[torch.Tensor] = []
    out = layer(latents, inputs, mask, weights)
    reference = layer._attend_projected(layer.latent_norm(latents), layer.input_norm(inputs), mask, None)
    expected = latents + reference
    expected = expected + layer.ffn(layer.ffn_norm(expected))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert weights[0].shape == (2, num_latents, 30)
    assert torch.all(weights[0][1, :, 25:] == 0)
