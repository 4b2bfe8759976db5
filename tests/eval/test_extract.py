"""Descriptor extraction: order independent of batching, eval mode restored, timing, segmentation input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vprdistill.data.readers import open_dataset
from vprdistill.eval.extract import compute_descriptors, extract_descriptors
from vprdistill.models.registry import build_model


@pytest.fixture(scope="module")
def dataset(tiny_places):
    return open_dataset(tiny_places, split="test")


def test_rows_follow_paths_whatever_the_batch_size(dataset):
    torch.manual_seed(0)
    model = build_model("resnet18-gem")
    model.train()
    paths = dataset.database_paths
    one_batch, timing = extract_descriptors(model, paths, 40, batch_size=len(paths), progress=False)
    assert model.training, "the training flag must be restored"
    small_batches = compute_descriptors(model, paths, (40, 40), batch_size=3, progress=False)
    reversed_rows = compute_descriptors(model, paths[::-1], 40, batch_size=3, progress=False)
    assert one_batch.shape == (len(paths), 512) and one_batch.dtype == np.float32
    np.testing.assert_allclose(small_batches, one_batch, atol=1e-5)
    np.testing.assert_allclose(reversed_rows[::-1], one_batch, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(one_batch, axis=1), 1.0, atol=1e-5)
    # A single batch cannot leave out a warm-up batch; it is timed as it is.
    assert not timing.warmup_excluded and timing.timed_images == len(paths)
    assert timing.ms_per_image > 0 and timing.image_size == (40, 40)


def test_timing_leaves_out_the_first_batch(dataset):
    model = build_model("resnet18-gem")
    _, timing = extract_descriptors(model, dataset.database_paths, 32, batch_size=3, progress=False)
    assert timing.warmup_excluded
    assert timing.num_images == 8 and timing.timed_images == 5
    assert 0 < timing.model_seconds <= timing.wall_seconds
    assert timing.to_json()["ms_per_image"] == pytest.approx(timing.ms_per_image)


def test_segmentation_input_uses_one_hot_structural_classes(dataset):
    model = build_model("structvpr-seg-tiny")
    assert model.input_channels == 10
    descriptors = compute_descriptors(
        model, dataset.database_seg_paths, 32, batch_size=4, input_kind="seg", progress=False
    )
    assert descriptors.shape == (dataset.num_database, model.descriptor_dim)
    assert np.isfinite(descriptors).all()
    with pytest.raises(ValueError, match="segmentation input"):
        compute_descriptors(model, dataset.database_paths, 32, input_kind="rgb", progress=False)
    with pytest.raises(ValueError, match="input_kind"):
        compute_descriptors(model, dataset.database_paths, 32, input_kind="depth", progress=False)
