"""PCA reduction of place descriptors, stored as plain arrays (never pickled).

scikit-learn's ``PCA`` learns the projection (its covariance eigen-solver
takes about a second on 10,000 × 2048 descriptors, where faiss ``PCAMatrix``
takes over ten); it is kept as two NumPy arrays so an index folder holds only
``.npy`` files and JSON. Reduced descriptors are
L2-normalised again, so inner product stays cosine similarity and scores of a
reduced index read like those of a full one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

PCA_MATRIX_FILE = "pca_matrix.npy"
PCA_BIAS_FILE = "pca_bias.npy"


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; `(N, D)` float32 (all-zero rows stay zero)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


@dataclass
class PcaProjection:
    """``y = normalise(matrix @ x + bias)``: `(D_in,)` → `(D_out,)`."""

    matrix: np.ndarray  # (D_out, D_in) float32
    bias: np.ndarray  # (D_out,) float32

    @property
    def input_dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.matrix.shape[0])

    @classmethod
    def fit(cls, descriptors: np.ndarray, output_dim: int) -> PcaProjection:
        """Learn a projection of `(N, D_in)` descriptors onto their top ``output_dim`` components."""
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        count, input_dim = descriptors.shape
        if not 0 < output_dim <= input_dim:
            raise ValueError(f"PCA dimension {output_dim} must lie in 1..{input_dim} (the descriptor size)")
        if count < max(2, output_dim):
            raise ValueError(
                f"PCA to {output_dim} dimensions needs at least {max(2, output_dim)} descriptors, got {count}"
            )
        pca = PCA(output_dim, svd_solver="covariance_eigh").fit(descriptors)
        matrix = pca.components_.astype(np.float32)
        bias = -(matrix @ pca.mean_.astype(np.float32))
        return cls(np.ascontiguousarray(matrix), np.ascontiguousarray(bias, dtype=np.float32))

    def apply(self, descriptors: np.ndarray) -> np.ndarray:
        """Project `(N, D_in)` descriptors to `(N, D_out)` L2-normalised float32."""
        descriptors = np.asarray(descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or descriptors.shape[1] != self.input_dim:
            raise ValueError(f"PCA expects (N, {self.input_dim}) descriptors, got {descriptors.shape}")
        return l2_normalise(descriptors @ self.matrix.T + self.bias)

    def save(self, folder: Path) -> None:
        np.save(folder / PCA_MATRIX_FILE, self.matrix, allow_pickle=False)
        np.save(folder / PCA_BIAS_FILE, self.bias, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> PcaProjection:
        matrix = np.load(folder / PCA_MATRIX_FILE, allow_pickle=False)
        bias = np.load(folder / PCA_BIAS_FILE, allow_pickle=False)
        if matrix.ndim != 2 or bias.shape != (matrix.shape[0],):
            raise ValueError(f"{folder}: PCA arrays have inconsistent shapes {matrix.shape} and {bias.shape}")
        return cls(matrix.astype(np.float32), bias.astype(np.float32))
