"""Sharded extraction: resumable after a crash, shareable between ranks, bound to one model and image list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprdistill.eval.extract import compute_descriptors
from vprdistill.eval.sharded import ShardedDescriptors, ShardedDescriptorsError, extract_sharded, shard_file
from vprdistill.models.registry import build_model
from vprdistill.retrieval.approximate import build_index, search_reranked

IMAGE_SIZE = 32
SHARD_SIZE = 5  # 12 images → shards of 5, 5 and 2 rows


class SimulatedCrash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        path = folder / f"place_{i:02d}.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet18-gem").eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(0)


@pytest.fixture(scope="module")
def reference(model: torch.nn.Module, images: list[Path]) -> np.ndarray:
    """Descriptors of the whole list in one uninterrupted, unsharded pass."""
    return compute_descriptors(model, images, IMAGE_SIZE, batch_size=4, progress=False)


def extract(model: torch.nn.Module, images: list[Path], out: Path, **kwargs) -> ShardedDescriptors:
    return extract_sharded(
        model, images, out, shard_size=SHARD_SIZE, image_size=IMAGE_SIZE, batch_size=4, progress=False, **kwargs
    )


def file_identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def test_interrupted_extraction_resumes_without_redoing_finished_shards(
    model: torch.nn.Module, images: list[Path], reference: np.ndarray, tmp_path: Path
) -> None:
    def crash_after_first(shard: int) -> None:
        raise SimulatedCrash(f"killed after shard {shard}")

    with pytest.raises(SimulatedCrash):
        extract(model, images, tmp_path, on_shard_done=crash_after_first)
    partial = ShardedDescriptors.open(tmp_path)
    assert partial.missing_shards() == [1, 2]
    with pytest.raises(ShardedDescriptorsError, match="unfinished"):
        partial.to_array()
    first_shard = file_identity(shard_file(tmp_path, 0))

    computed: list[int] = []
    resumed = extract(model, images, tmp_path, on_shard_done=computed.append)
    assert computed == [1, 2]
    assert file_identity(shard_file(tmp_path, 0)) == first_shard
    assert resumed.complete and len(resumed) == len(images) and resumed.dim == model.descriptor_dim
    np.testing.assert_allclose(resumed.to_array(), reference, rtol=0, atol=1e-5)
    assert resumed.paths == [str(p) for p in images]
    assert resumed.verify() == []

    again: list[int] = []
    extract(model, images, tmp_path, on_shard_done=again.append)
    assert again == []


def test_damaged_shard_is_recomputed_and_detected(
    model: torch.nn.Module, images: list[Path], reference: np.ndarray, tmp_path: Path
) -> None:
    extract(model, images, tmp_path)
    # A truncated copy: the header promises more rows than the file holds.
    path = shard_file(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:200])
    assert ShardedDescriptors.open(tmp_path).missing_shards() == [1]
    computed: list[int] = []
    repaired = extract(model, images, tmp_path, on_shard_done=computed.append)
    assert computed == [1]
    np.testing.assert_allclose(repaired.to_array(), reference, rtol=0, atol=1e-5)

    # Same shape, other values: only the checksum notices.
    data = np.load(shard_file(tmp_path, 2))
    np.save(shard_file(tmp_path, 2), data + 1.0)
    assert ShardedDescriptors.open(tmp_path).verify() == [2]


def test_two_ranks_together_match_one_process(
    model: torch.nn.Module, images: list[Path], reference: np.ndarray, tmp_path: Path
) -> None:
    rank0: list[int] = []
    extract(model, images, tmp_path, rank=0, world_size=2, on_shard_done=rank0.append)
    assert rank0 == [0, 2]
    assert ShardedDescriptors.open(tmp_path).missing_shards() == [1]
    rank1: list[int] = []
    merged = extract(model, images, tmp_path, rank=1, world_size=2, on_shard_done=rank1.append)
    assert rank1 == [1]
    np.testing.assert_allclose(merged.to_array(), reference, rtol=0, atol=1e-5)
    rows = np.array([11, 0, 7, 5])
    np.testing.assert_array_equal(merged.take(rows), merged.to_array()[rows])
    # The shards feed an index a chunk at a time and serve as its re-ranking database.
    index = build_index(merged.chunks(), "flat")
    _, found = search_reranked(index, reference[:3], 2, merged, shortlist=4)
    np.testing.assert_array_equal(found[:, 0], [0, 1, 2])


def test_folder_of_another_model_or_image_list_is_refused(
    model: torch.nn.Module, images: list[Path], tmp_path: Path
) -> None:
    extract(model, images, tmp_path)
    other = tiny_model(1)
    with pytest.raises(ShardedDescriptorsError, match="model_fingerprint"):
        extract(other, images, tmp_path)
    with pytest.raises(ShardedDescriptorsError, match="image_list_hash"):
        extract(model, images[::-1], tmp_path)

    computed: list[int] = []
    replaced = extract(other, images[:7], tmp_path, overwrite=True, on_shard_done=computed.append)
    assert computed == [0, 1]
    assert not shard_file(tmp_path, 2).exists()  # past the new end
    expected = compute_descriptors(other, images[:7], IMAGE_SIZE, batch_size=4, progress=False)
    np.testing.assert_allclose(replaced.to_array(), expected, rtol=0, atol=1e-5)
