"""Re-ranking by geometric verification: mutual NN, patch and SIFT inliers, re-rankers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch

from vprdistill.retrieval.rerank import (
    PatchReranker,
    Reranker,
    SiftReranker,
    build_reranker,
    mutual_nearest_neighbours,
    patch_inliers,
    rerank_candidates,
    sift_inliers,
)


def textured_image(seed: int, size: int = 128) -> np.ndarray:
    """A grayscale checkerboard plus smooth blobs and pixel noise, ``(size, size)`` uint8."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    board = (((rows // 16) + (cols // 16)) % 2) * 120.0 + 60.0
    blobs = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 2.0)
    image = board + 60.0 * blobs / blobs.std() + rng.normal(0, 5, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def shifted_rotated(image: np.ndarray, degrees: float = 8.0, shift: tuple[float, float] = (5.0, -3.0)) -> np.ndarray:
    size = image.shape[0]
    warp = cv2.getRotationMatrix2D((size / 2, size / 2), degrees, 1.0)
    warp[:, 2] += shift
    return cv2.warpAffine(image, warp, (size, size), borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def cnn_feature_fn():
    """Stage-2 feature maps (stride 8) of a randomly initialised ResNet-18, as a re-ranker's ``feature_fn``."""
    torch.manual_seed(0)
    network = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(2,)).eval()

    def feature_maps(images: list[np.ndarray]) -> list[np.ndarray]:
        batch = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)[:, None].repeat(1, 3, 1, 1)
        with torch.no_grad():
            return list(network((batch - 0.45) / 0.25)[0].numpy())

    return feature_maps


def test_mutual_nearest_neighbours_on_constructed_example() -> None:
    e = np.eye(4, dtype=np.float32)
    desc_a = np.stack([e[0], e[1], e[2]])
    leaning = 0.9 * e[0] + 0.1 * e[2]
    desc_b = np.stack([e[1], leaning / np.linalg.norm(leaning), e[3]])
    # a0<->b1 and a1<->b0 are mutual; a2's nearest is b1, but b1 prefers a0; b2 matches nothing mutually.
    np.testing.assert_array_equal(mutual_nearest_neighbours(desc_a, desc_b), [[0, 1], [1, 0]])


def test_mutual_nearest_neighbours_recovers_a_permutation() -> None:
    rng = np.random.default_rng(1)
    desc = rng.normal(size=(50, 32)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    permutation = rng.permutation(50)
    matches = mutual_nearest_neighbours(desc, desc[permutation])
    assert len(matches) == 50
    np.testing.assert_array_equal(permutation[matches[:, 1]], matches[:, 0])


def test_mutual_nearest_neighbours_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match="descriptor sets"):
        mutual_nearest_neighbours(np.zeros((3, 8)), np.zeros((3, 4)))


def test_patch_inliers_separate_same_place_from_unrelated(cnn_feature_fn) -> None:
    image = textured_image(0)
    moved = np.roll(image, (16, 8), axis=(0, 1))  # two cells down, one cell right at stride 8
    query, same, moved_map, unrelated = cnn_feature_fn([image, image, moved, textured_image(5)])
    cells = query.shape[1] * query.shape[2]
    identical = patch_inliers(query, same)
    shifted = patch_inliers(query, moved_map)
    different = patch_inliers(query, unrelated)
    assert identical >= 0.9 * cells
    assert different < 0.2 * cells
    assert shifted > 3 * different


def test_patch_inliers_on_random_feature_maps() -> None:
    rng = np.random.default_rng(2)
    feature_map = rng.normal(size=(64, 14, 14)).astype(np.float32)
    other = rng.normal(size=(64, 14, 14)).astype(np.float32)
    assert patch_inliers(feature_map, feature_map) == 14 * 14
    assert patch_inliers(feature_map, other) < 0.15 * 14 * 14


def test_patch_inliers_rejects_a_flat_descriptor_array() -> None:
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        patch_inliers(np.zeros((10, 8)), np.zeros((10, 8)))


def test_sift_inliers_separate_a_warped_copy_from_noise() -> None:
    image = textured_image(0)
    rng = np.random.default_rng(3)
    noise_a = rng.integers(0, 256, image.shape, dtype=np.uint8)
    noise_b = rng.integers(0, 256, image.shape, dtype=np.uint8)
    assert sift_inliers(image, shifted_rotated(image)) >= 50
    assert sift_inliers(image, noise_a) <= 10
    assert sift_inliers(noise_a, noise_b) <= 10


def test_sift_inliers_accept_rgb_images() -> None:
    image = textured_image(0)
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    assert sift_inliers(rgb, shifted_rotated(image)) >= 50


def test_rerank_candidates_sorts_by_score_and_keeps_global_rank_on_ties() -> None:
    order = rerank_candidates(np.array([3, 5, 3, 5]), np.array([10, 11, 12, 13]))
    np.testing.assert_array_equal(order, [11, 13, 10, 12])
    np.testing.assert_array_equal(rerank_candidates(np.array([0, 2, 1])), [1, 2, 0])


def test_patch_reranker_puts_the_true_match_first_and_caches_database_features(cnn_feature_fn) -> None:
    images = {
        Path("q.jpg"): textured_image(0),
        Path("db/a.jpg"): textured_image(11),
        Path("db/b.jpg"): textured_image(12),
        Path("db/match.jpg"): np.roll(textured_image(0), (8, 16), axis=(0, 1)),
    }
    requested: list[list[Path]] = []

    def feature_fn(paths: list[Path]) -> list[np.ndarray]:
        requested.append(list(paths))
        return cnn_feature_fn([images[p] for p in paths])

    reranker = PatchReranker(feature_fn)
    assert isinstance(reranker, Reranker)
    candidates = ["db/a.jpg", "db/b.jpg", "db/match.jpg"]
    order = reranker.rerank("q.jpg", candidates, np.array([7, 3, 5]))
    assert order.tolist()[0] == 5
    assert sorted(order.tolist()) == [3, 5, 7]
    assert reranker.last_scores[2] > reranker.last_scores[:2].max()

    again = reranker.rerank("q.jpg", candidates, np.array([7, 3, 5]))
    np.testing.assert_array_equal(again, order)
    assert requested[1] == [Path("q.jpg")], "database features must come from the cache the second time"
    assert reranker.timing.queries == 2 and reranker.timing.ms_per_query > 0


def test_sift_reranker_puts_the_true_match_first() -> None:
    rng = np.random.default_rng(4)
    images = {
        "q.jpg": textured_image(0),
        "a.jpg": textured_image(21),
        "b.jpg": rng.integers(0, 256, (128, 128), dtype=np.uint8),
        "match.jpg": shifted_rotated(textured_image(0)),
    }
    reranker = build_reranker("sift", image_loader=lambda path: images[Path(path).name])
    assert isinstance(reranker, SiftReranker)
    order = reranker.rerank("q.jpg", ["a.jpg", "b.jpg", "match.jpg"], np.array([0, 1, 2]))
    assert order[0] == 2 and sorted(order.tolist()) == [0, 1, 2]
    assert reranker.timing.as_dict()["queries"] == 1


def test_build_reranker_names_and_errors() -> None:
    assert build_reranker("none") is None
    with pytest.raises(ValueError, match="feature_fn"):
        build_reranker("patch")
    with pytest.raises(ValueError, match="image_loader"):
        build_reranker("sift")
    with pytest.raises(ValueError, match="unknown re-ranker"):
        build_reranker("superglue")


def test_reranker_reports_a_feature_function_that_drops_images() -> None:
    reranker = PatchReranker(lambda paths: [np.zeros((4, 2, 2), np.float32)])
    with pytest.raises(ValueError, match="returned 1 results for 3 images"):
        reranker.rerank("q.jpg", ["a.jpg", "b.jpg"], np.array([0, 1]))


def test_patch_reranker_plugs_into_evaluation_and_lifts_recall() -> None:
    from vprdistill.data.place_dataset import PlaceDataset
    from vprdistill.eval.evaluate import evaluate_descriptors

    rng = np.random.default_rng(6)
    database = [Path(f"db{i}.jpg") for i in range(6)]
    queries = [Path("q0.jpg"), Path("q1.jpg")]
    dataset = PlaceDataset(
        name="constructed", root=Path("."), split="test", database_paths=database, query_paths=queries,
        database_utm=np.array([[100.0 * i, 0.0] for i in range(6)]), query_utm=np.array([[400.0, 0.0], [100.0, 0.0]]),
    )  # fmt: skip
    # Global descriptors put each query's true place (database 4 and 1) third.
    database_descriptors = np.eye(6, dtype=np.float32)
    query_descriptors = np.array([[3, 0, 2, 0, 1, 0], [0, 1, 0, 3, 0, 2]], dtype=np.float32)
    query_descriptors /= np.linalg.norm(query_descriptors, axis=1, keepdims=True)
    maps = {p: rng.normal(size=(16, 6, 6)).astype(np.float32) for p in database}
    maps[queries[0]], maps[queries[1]] = maps[database[4]], maps[database[1]]
    reranker = build_reranker("patch", feature_fn=lambda paths: [maps[Path(p)] for p in paths])

    result = evaluate_descriptors(
        database_descriptors, query_descriptors, dataset, threshold_m=25.0, recall_ns=(1, 5),
        reranker=reranker, rerank_topk=3,
    )  # fmt: skip
    assert result.recall_before_rerank["1"] == 0.0
    assert result.recall["1"] == 100.0
    report = result.to_json()["rerank"]
    assert report["kind"] == "patch" and report["topk"] == 3 and report["timing"]["queries"] == 2
