"""Fusion of CNN and ViT tokens: TSCM's inter-transformer encoder of two cross-attention blocks."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from vprdistill.models.options import call_with_options


class CrossAttentionBlock(nn.Module):
    """Queries attend to a context: ``q ← LN(q + MHA(q, ctx, ctx))``, then ``q ← LN(q + FFN(q))``.

    Post-norm residual blocks as in the original Transformer; the FFN is
    ``width → ffn_dim → width`` with ReLU.

    Shapes: queries ``(B, Nq, width)``, context ``(B, Nk, width)`` → ``(B, Nq, width)``.
    """

    def __init__(self, width: int, heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, width)
        )
        self.norm2 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(queries, context, context, need_weights=False)
        x = self.norm1(queries + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ffn(x)))


class InterTransformerEncoder(nn.Module):
    """TSCM's fusion: ViT tokens attend to CNN tokens, CNN tokens attend to ViT tokens.

    The two outputs are concatenated along the token axis ``[ViT←CNN ; CNN←ViT]``
    and then along channels with the un-fused tokens in the same order
    ``[ViT ; CNN]``, so each fused token sits next to the token it was computed from.

    Shapes: cnn ``(B, N1, width)``, vit ``(B, N2, width)`` → ``(B, N2 + N1, 2·width)``.
    """

    def __init__(self, width: int, heads: int = 4, ffn_dim: int = 1024, dropout: float = 0.0) -> None:
        super().__init__()
        self.vit_from_cnn = CrossAttentionBlock(width, heads, ffn_dim, dropout)
        self.cnn_from_vit = CrossAttentionBlock(width, heads, ffn_dim, dropout)
        self.output_dim = 2 * int(width)

    def forward(self, cnn_tokens: torch.Tensor, vit_tokens: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.vit_from_cnn(vit_tokens, cnn_tokens), self.cnn_from_vit(cnn_tokens, vit_tokens)], dim=1)
        unfused = torch.cat([vit_tokens, cnn_tokens], dim=1)
        return torch.cat([fused, unfused], dim=2)


FUSIONS: dict[str, type[nn.Module]] = {"cross-attention": InterTransformerEncoder}


def build_fusion(spec: Mapping[str, Any], width: int) -> nn.Module:
    """Build ``FUSIONS[spec["name"]]`` for tokens of ``width`` channels with the spec's other keys."""
    options = dict(spec)
    name = options.pop("name", None)
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; valid: {sorted(FUSIONS)}")
    return call_with_options(FUSIONS[name], options, f"fusion {name!r}", width=width)
