"""The inter-transformer encoder against the official TSCM formula (float64, weights copied from the module)."""

from __future__ import annotations

import math

import pytest
import torch

from vprdistill.models.fusion import CrossAttentionBlock, InterTransformerEncoder, build_fusion


def _attention_reference(block: CrossAttentionBlock, q: torch.Tensor, kv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention as the official code writes it: per-head softmax(q kᵀ / √d_k) v, then ``out``."""
    attention = block.attention
    w_q, w_k, w_v = attention.in_proj_weight.detach().double().chunk(3)
    b_q, b_k, b_v = attention.in_proj_bias.detach().double().chunk(3)
    batch, width = q.shape[0], q.shape[2]
    d_k = width // heads

    def split(x: torch.Tensor) -> torch.Tensor:  # (B, N, width) → (B, heads, N, d_k)
        return x.view(batch, -1, heads, d_k).transpose(1, 2)

    queries, keys, values = split(q @ w_q.T + b_q), split(kv @ w_k.T + b_k), split(kv @ w_v.T + b_v)
    scores = torch.softmax(queries @ keys.transpose(-2, -1) / math.sqrt(d_k), dim=-1)
    concat = (scores @ values).transpose(1, 2).reshape(batch, -1, width)
    return concat @ attention.out_proj.weight.detach().double().T + attention.out_proj.bias.detach().double()


def _ffn_reference(block: CrossAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    first, last = block.ffn[0], block.ffn[3]
    hidden = torch.relu(x @ first.weight.detach().double().T + first.bias.detach().double())
    return hidden @ last.weight.detach().double().T + last.bias.detach().double()


def test_fusion_without_layer_norm_matches_the_official_formula() -> None:
    torch.manual_seed(0)
    heads = 4
    fusion = build_fusion(
        {"name": "cross-attention", "heads": heads, "ffn_dim": 32, "dropout": 0.1, "layer_norm": False}, 16
    )
    fusion = fusion.double().eval()
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in fusion.modules())
    cnn, vit = torch.randn(2, 6, 16, dtype=torch.float64), torch.randn(2, 5, 16, dtype=torch.float64)
    # fuse1 = V + attn(V, R, R); fuse1 += ff(fuse1); fuse2 likewise with R as the query.
    fuse1 = vit + _attention_reference(fusion.vit_from_cnn, vit, cnn, heads)
    fuse1 = fuse1 + _ffn_reference(fusion.vit_from_cnn, fuse1)
    fuse2 = cnn + _attention_reference(fusion.cnn_from_vit, cnn, vit, heads)
    fuse2 = fuse2 + _ffn_reference(fusion.cnn_from_vit, fuse2)
    expected = torch.cat([torch.cat([fuse1, fuse2], dim=1), torch.cat([vit, cnn], dim=1)], dim=2)
    with torch.no_grad():
        out = fusion(cnn, vit)
    assert out.shape == (2, 11, 32) and fusion.output_dim == 32
    assert torch.allclose(out, expected, atol=1e-12, rtol=0)


def test_layer_norm_is_post_norm_when_on() -> None:
    torch.manual_seed(0)
    block = CrossAttentionBlock(8, heads=2, ffn_dim=16).double().eval()
    assert isinstance(block.norm1, torch.nn.LayerNorm) and isinstance(block.norm2, torch.nn.LayerNorm)
    q, ctx = torch.randn(1, 3, 8, dtype=torch.float64), torch.randn(1, 4, 8, dtype=torch.float64)

    def norm(x: torch.Tensor) -> torch.Tensor:  # fresh LayerNorm: weight 1, bias 0, eps 1e-5
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)

    x = norm(q + _attention_reference(block, q, ctx, 2))
    expected = norm(x + _ffn_reference(block, x))
    with torch.no_grad():
        assert torch.allclose(block(q, ctx), expected, atol=1e-10, rtol=0)


def test_residual_dropout_is_separate_from_the_attention_and_ffn_dropout() -> None:
    official = InterTransformerEncoder(8, heads=2, ffn_dim=16, dropout=0.1, layer_norm=False, residual_dropout=0.0)
    ours = InterTransformerEncoder(8, heads=2, ffn_dim=16, dropout=0.1)
    assert official.vit_from_cnn.dropout.p == 0.0 and ours.vit_from_cnn.dropout.p == 0.1
    assert official.vit_from_cnn.attention.dropout == 0.1 and official.vit_from_cnn.ffn[2].p == 0.1
    # No LayerNorm: the same parameters minus the two norms of each block.
    assert _count(ours) - _count(official) == 2 * 2 * 2 * 8


def test_unknown_fusion_option_is_named() -> None:
    with pytest.raises(ValueError, match="layer_norms"):
        build_fusion({"name": "cross-attention", "layer_norms": False}, 8)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
