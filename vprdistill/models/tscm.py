"""TSCM (ICRA 2024): the CNN + ViT teacher with cross-attention fusion, and its light student.

Shapes in comments are for 224×224 inputs with the full-size presets.

Teacher (``tscm-teacher``, the official code's structure): ResNet-50 cut after
stage 3 (1024×14×14) → (a) GeM → 1024-d and (b) 196 tokens projected
1024→512; ViT-B/16 patch tokens (196×768) projected 768→512; the
inter-transformer encoder fuses them (392×1024); three NetVLAD-Loupe heads on
the CNN tokens (→256), the fused tokens (→512) and the ViT tokens (→256).
Descriptor: ``[CNN 256 | fused 512 | ViT 256 | GeM 1024]`` = 2048-d.
As in the official code the ViT keeps only its child modules (no positional
embedding, no class token) and starts from a random initialisation while the
ResNet is ImageNet-pretrained; the fusion blocks have no LayerNorm; every
Loupe head has 64 clusters on half-width sub-vectors (each token cut into two
consecutive halves: 392×1024 → 784×512, 196×512 → 392×256) and no BatchNorm.
That gives 125.0M parameters, the official count (the halving is what keeps
64 clusters at that size: on whole tokens they would give about 150M).

Student (``tscm-student``): the same ResNet-50 trunk + GeM → 1024-d, and a
16×16 patch embedding (3→768, 196 tokens) → NetVLAD-Loupe → 256 → linear
256→1024. Descriptor: ``[patch branch 1024 | GeM 1024]`` = 2048-d. Its Loupe
head, as in the official code, has 64 clusters on 768 vectors of 196 values:
the 196×768 token values laid end to end and re-cut every 196 (a memory
re-view, not a transpose), which ties it to 224×224 inputs (N·768 must divide
by 196). 12.70M parameters, the official student's used part.

``tscm-teacher-fulltoken`` and ``tscm-student-fulltoken`` are our variants
(METHODS.md leaves these points open): Loupe heads on whole tokens (32 clusters
per teacher head, 16 for the student) with BatchNorm, post-norm LayerNorm
fusion blocks, and an ImageNet-pretrained ViT that keeps its positional
embedding. In every variant the order of the parts inside each descriptor puts
the GeM halves of teacher and student at the same place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from timm.layers import PatchEmbed
from torch import nn

from vprdistill.models.aggregators import build_aggregator
from vprdistill.models.aggregators.tokens import as_tokens
from vprdistill.models.fusion import build_fusion
from vprdistill.models.parts import PartsNet, backbone_from_spec
from vprdistill.models.place_model import descriptor_projection

TEACHER_HEADS = ("cnn", "fused", "vit")


class TSCMTeacherNet(PartsNet):
    """The TSCM teacher body: ``(B, C_in, H, W)`` → ``(B, D)`` (un-normalised; ``PlaceModel`` normalises).

    Parts: ``cnn``, ``vit`` (backbones), ``pool`` (GeM), ``cnn_proj``, ``vit_proj``
    (token projections), ``fusion``, ``head_cnn``, ``head_fused``, ``head_vit``.
    """

    PARTS = ("cnn", "pool", "cnn_proj", "vit", "vit_proj", "fusion", "head_cnn", "head_fused", "head_vit")
    LOCAL = "cnn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cnn_map = self.cnn(x)  # (B, 1024, 14, 14)
        pooled = self.pool(cnn_map)  # (B, 1024)
        cnn_tokens = self.cnn_proj(as_tokens(cnn_map))  # (B, 196, 512)
        vit_tokens = self.vit_proj(as_tokens(self.vit(x)))  # (B, 196, 512)
        fused = self.fusion(cnn_tokens, vit_tokens)  # (B, 392, 1024)
        descriptor = torch.cat(
            [self.head_cnn(cnn_tokens), self.head_fused(fused), self.head_vit(vit_tokens), pooled], dim=1
        )  # (B, 256 + 512 + 256 + 1024)
        return self.project(descriptor)


class TSCMStudentNet(PartsNet):
    """The TSCM student body: ``(B, C_in, H, W)`` → ``(B, D)``; no transformer blocks.

    Parts: ``cnn``, ``pool`` (GeM), ``patch_embed``, ``token_head``, ``token_proj``.
    """

    PARTS = ("cnn", "pool", "patch_embed", "token_head", "token_proj")
    LOCAL = "cnn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.cnn(x))  # (B, 1024)
        tokens = self.patch_embed(x)  # (B, 196, 768)
        patch_branch = self.token_proj(self.token_head(tokens))  # (B, 256) → (B, 1024)
        return self.project(torch.cat([patch_branch, pooled], dim=1))  # (B, 2048)


def build_tscm_teacher_net(
    *, pretrained: bool, cnn: Mapping[str, Any], vit: Mapping[str, Any], pool: Mapping[str, Any],
    fusion: Mapping[str, Any], heads: Mapping[str, Mapping[str, Any]], token_dim: int = 512,
    input_channels: int = 3, descriptor_dim: int | None = None, projection: bool = False,
) -> TSCMTeacherNet:  # fmt: skip
    """Config keys of the ``tscm-teacher`` architecture.

    Args:
        cnn, vit: backbone specs (the CNN must give a map; the ViT gives tokens).
        pool: aggregator spec of the CNN map's global vector (GeM).
        fusion: fusion spec (``{"name": "cross-attention", "heads": 4, "ffn_dim": 1024}``).
        heads: aggregator specs keyed ``cnn``, ``fused``, ``vit`` (NetVLAD-Loupe).
        token_dim: width both token streams are projected to (512).
        descriptor_dim: D; ``None`` keeps the concatenation's size.
    """
    missing = [key for key in TEACHER_HEADS if key not in heads]
    unknown = [key for key in heads if key not in TEACHER_HEADS]
    if missing or unknown:
        raise ValueError(
            f"tscm-teacher: heads must be keyed {list(TEACHER_HEADS)}; missing {missing}, unknown {unknown}"
        )
    cnn_trunk = backbone_from_spec(cnn, input_channels, pretrained)
    vit_trunk = backbone_from_spec(vit, input_channels, pretrained)
    pool_layer = build_aggregator(pool, cnn_trunk.out_channels)
    fusion_layer = build_fusion(fusion, token_dim)
    widths = {"cnn": token_dim, "fused": fusion_layer.output_dim, "vit": token_dim}
    head_layers = {key: build_aggregator(heads[key], width) for key, width in widths.items()}
    natural = sum(layer.output_dim for layer in head_layers.values()) + pool_layer.output_dim
    linear, dim = descriptor_projection(natural, descriptor_dim, projection)
    # Registered in this order (the order of the checkpoints' parameters), not that of PARTS.
    parts = {
        "cnn": cnn_trunk,
        "vit": vit_trunk,
        "pool": pool_layer,
        "cnn_proj": nn.Linear(cnn_trunk.out_channels, token_dim),
        "vit_proj": nn.Linear(vit_trunk.out_channels, token_dim),
        "fusion": fusion_layer,
        **{f"head_{key}": layer for key, layer in head_layers.items()},
    }
    return TSCMTeacherNet(parts, linear, dim)


def build_tscm_student_net(
    *, pretrained: bool, cnn: Mapping[str, Any], pool: Mapping[str, Any], patch_size: int = 16,
    patch_dim: int = 768, token_head: Mapping[str, Any], token_proj_dim: int = 1024, input_channels: int = 3,
    descriptor_dim: int | None = None, projection: bool = False,
) -> TSCMStudentNet:  # fmt: skip
    """Config keys of the ``tscm-student`` architecture.

    Args:
        cnn: backbone spec of the CNN trunk; pool: its aggregator spec (GeM).
        patch_size, patch_dim: the patch embedding (a ``patch_size``-strided convolution to ``patch_dim``).
        token_head: aggregator spec of the patch tokens (NetVLAD-Loupe).
        token_proj_dim: the linear layer after the token head (256 → 1024).
        descriptor_dim: D; ``None`` keeps the concatenation's size.
    """
    cnn_trunk = backbone_from_spec(cnn, input_channels, pretrained)
    pool_layer = build_aggregator(pool, cnn_trunk.out_channels)
    # img_size=None: any image size works; the stride-p convolution floors sizes not divisible by p.
    patch_embed = PatchEmbed(
        img_size=None, patch_size=patch_size, in_chans=input_channels, embed_dim=patch_dim, strict_img_size=False
    )
    head = build_aggregator(token_head, patch_dim)
    token_proj = nn.Linear(head.output_dim, token_proj_dim)
    linear, dim = descriptor_projection(token_proj_dim + pool_layer.output_dim, descriptor_dim, projection)
    parts = {
        "cnn": cnn_trunk,
        "pool": pool_layer,
        "patch_embed": patch_embed,
        "token_head": head,
        "token_proj": token_proj,
    }
    return TSCMStudentNet(parts, linear, dim)
