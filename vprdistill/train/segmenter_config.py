"""Settings of the segmenter training (``vprdistill train-segmenter``), apart from the torch code that uses them.

Kept in their own module so the CLI can show their defaults in ``--help``
without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_CONDITIONS = ("day-clear-summer",)


@dataclass
class SegmenterTrainingConfig:
    """Settings of :func:`train_segmenter` (all saved to ``segmenter_training.json``).

    ``conditions``: the ``note`` values of the training images (``None``: every
    image of the split). ``max_images``: a seeded random subset of that many.
    ``hidden_sizes`` etc. are ``SegformerConfig`` fields; the defaults give a
    network of about 0.4 M parameters that trains on a CPU in minutes at 128 px.
    """

    epochs: int = 10
    image_size: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    split: str = "train"
    conditions: list[str] | None = field(default_factory=lambda: list(DEFAULT_CONDITIONS))
    max_images: int | None = None
    flip: bool = True
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    depths: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    num_attention_heads: list[int] = field(default_factory=lambda: [1, 1, 2, 4])
    decoder_hidden_size: int = 64

    def validate(self) -> None:
        for name in ("epochs", "image_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be at least 1 (or None for all), got {self.max_images}")
        if self.conditions is not None and not self.conditions:
            raise ValueError("conditions is empty: name at least one condition, or None for every image")
        stages = {len(self.hidden_sizes), len(self.depths), len(self.num_attention_heads)}
        if len(stages) != 1:
            raise ValueError(
                "hidden_sizes, depths and num_attention_heads need one entry per stage, got "
                f"{self.hidden_sizes}, {self.depths}, {self.num_attention_heads}"
            )
        for size, heads in zip(self.hidden_sizes, self.num_attention_heads):
            if heads < 1 or size % heads:
                raise ValueError(f"hidden size {size} is not divisible by its {heads} attention heads")
