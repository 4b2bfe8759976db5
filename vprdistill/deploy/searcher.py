"""Model descriptors in, database matches out: optional PCA, then a descriptor store.

``CompactSearcher`` is the search half of a map index, without its metadata;
the matching benchmarks time exactly this object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vprdistill.deploy.pca import PcaProjection, l2_normalise
from vprdistill.deploy.stores import DescriptorStore, build_store, load_store


@dataclass
class CompactSearcher:
    """Searches `(M, D_model)` descriptors against stored `(N, D_stored)` ones."""

    store: DescriptorStore
    pca: PcaProjection | None = None

    @classmethod
    def build(
        cls,
        descriptors: np.ndarray,
        index_type: str = "flat",
        dtype: str = "float32",
        pca_dim: int | None = None,
    ) -> CompactSearcher:
        """Learn the PCA (when ``pca_dim`` is set) and the store's parameters on `(N, D)` descriptors."""
        descriptors = l2_normalise(descriptors)
        pca = PcaProjection.fit(descriptors, pca_dim) if pca_dim else None
        stored = pca.apply(descriptors) if pca is not None else descriptors
        return cls(build_store(stored, index_type, dtype), pca)

    @classmethod
    def load(cls, folder: Path, index_type: str, dtype: str, stored_dim: int, has_pca: bool) -> CompactSearcher:
        pca = PcaProjection.load(folder) if has_pca else None
        return cls(load_store(folder, index_type, dtype, stored_dim), pca)

    def save(self, folder: Path) -> None:
        self.store.save(folder)
        if self.pca is not None:
            self.pca.save(folder)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def stored_dim(self) -> int:
        return self.store.dim

    def reduce(self, descriptors: np.ndarray) -> np.ndarray:
        """Model descriptors `(M, D_model)` → the stored space `(M, D_stored)`, L2-normalised."""
        return self.pca.apply(descriptors) if self.pca is not None else l2_normalise(descriptors)

    def search(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` matches of `(M, D_model)` descriptors → scores `(M, k)`, indices `(M, k)` (−1 = none)."""
        return self.store.search(self.reduce(descriptors), k)

    def add(self, descriptors: np.ndarray) -> None:
        """Append `(N, D_model)` descriptors, reduced with the PCA learnt at build time."""
        self.store.add(self.reduce(descriptors))

    def empty_like(self) -> CompactSearcher:
        """Same PCA and trained store parameters, no entries."""
        return CompactSearcher(self.store.empty_like(), self.pca)
