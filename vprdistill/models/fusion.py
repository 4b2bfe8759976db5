"""Fusion of CNN and ViT tokens: TSCM's inter-transformer encoder of two cross-attention blocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vprdistill.models.options import build_named


class CrossAttentionBlock(nn.Module):
    """Queries attend to a context: ``q ← q + MHA(q, ctx, ctx)``, then ``q ← q + FFN(q)``.

    The FFN is ``width → ffn_dim → width`` with ReLU and dropout after the ReLU;
    the attention drops attention weights with ``dropout``. With ``layer_norm``
    each residual sum is followed by a LayerNorm (post-norm, as in the original
    Transformer); without it the block is the plain residual form of the
    official TSCM code. ``residual_dropout`` (default: ``dropout``) drops each
    branch's output before it is added; the official code has none (0).

    Shapes: queries ``(B, Nq, width)``, context ``(B, Nk, width)`` → ``(B, Nq, width)``.
    """

    def __init__(
        self, width: int, heads: int, ffn_dim: int, dropout: float = 0.0, layer_norm: bool = True,
        residual_dropout: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, width)
        )
        self.norm2 = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout if residual_dropout is None else residual_dropout)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(queries, context, context, need_weights=False)
        x = self.norm1(queries + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ffn(x)))


class InterTransformerEncoder(nn.Module):
    """TSCM's fusion: ViT tokens attend to CNN tokens, CNN tokens attend to ViT tokens.

    The two outputs are concatenated along the token axis ``[ViT←CNN ; CNN←ViT]``
    and then along channels with the un-fused tokens in the same order
    ``[ViT ; CNN]``, so each fused token sits next to the token it was computed
    from (the official code's order).

    Args:
        width: token width of both streams.
        heads, ffn_dim, dropout, layer_norm, residual_dropout: see :class:`CrossAttentionBlock`.

    Shapes: cnn ``(B, N1, width)``, vit ``(B, N2, width)`` → ``(B, N2 + N1, 2·width)``.
    """

    def __init__(
        self, width: int, heads: int = 4, ffn_dim: int = 1024, dropout: float = 0.0, layer_norm: bool = True,
        residual_dropout: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        block = (width, heads, ffn_dim, dropout, layer_norm, residual_dropout)
        self.vit_from_cnn = CrossAttentionBlock(*block)
        self.cnn_from_vit = CrossAttentionBlock(*block)
        self.output_dim = 2 * int(width)

    def forward(self, cnn_tokens: torch.Tensor, vit_tokens: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.vit_from_cnn(vit_tokens, cnn_tokens), self.cnn_from_vit(cnn_tokens, vit_tokens)], dim=1)
        unfused = torch.cat([vit_tokens, cnn_tokens], dim=1)
        return torch.cat([fused, unfused], dim=2)


FUSIONS: dict[str, type[nn.Module]] = {"cross-attention": InterTransformerEncoder}


def build_fusion(spec: Mapping[str, Any], width: int) -> nn.Module:
    """Build ``FUSIONS[spec["name"]]`` for tokens of ``width`` channels with the spec's other keys."""
    return build_named(FUSIONS, spec, "fusion", width=width)
