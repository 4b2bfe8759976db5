"""GeM, NetVLAD and NetVLAD-Loupe against hand computations and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vprdistill.models.aggregators import GeM, NetVLAD, NetVLADLoupe, build_aggregator


def test_gem_matches_hand_computation_on_map_and_tokens() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.5], [2.0, 0.0]]]])  # (1, 2, 2, 2)
    gem = GeM(2, p=3.0)
    expected = torch.tensor([[((1 + 8 + 27 + 64) / 4) ** (1 / 3), ((0.125 + 0.125 + 8 + 1e-18) / 4) ** (1 / 3)]])
    assert torch.allclose(gem(x), expected, atol=1e-5)
    tokens = x.flatten(2).transpose(1, 2)  # (1, 4, 2)
    assert torch.allclose(gem(tokens), expected, atol=1e-5)


def test_gem_exponent_is_learned() -> None:
    gem = GeM(4)
    gem(torch.rand(2, 4, 3, 3)).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs().item() > 0


def _clustered_features(seed: int, clusters: int = 4, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    features = np.concatenate([c + 0.05 * rng.normal(size=(150, dim)) for c in centres]).astype(np.float32)
    return centres, features


def test_netvlad_kmeans_init_places_centroids_on_the_clusters() -> None:
    centres, features = _clustered_features(seed=1)
    netvlad = NetVLAD(16, clusters=4)
    netvlad.init_from_features(features, restarts=5)
    centroids = netvlad.centroids.detach().numpy()
    centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    similarity = centroids @ centres.T  # (K, true clusters)
    assert (similarity.max(axis=0) > 0.95).all(), similarity
    # A feature equal to centroid k is assigned to cluster k, almost exclusively.
    for k in range(4):
        feature = torch.from_numpy(netvlad.centroids.detach().numpy()[k]).reshape(1, 1, 16)
        assignment = netvlad.soft_assignment(feature)[0, 0]
        assert assignment.argmax().item() == k
        assert assignment[k].item() > 0.9


def test_netvlad_init_rejects_too_few_features() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        NetVLAD(16, clusters=8).init_from_features(np.zeros((5, 16), dtype=np.float32))


def test_netvlad_descriptor_is_intra_and_globally_normalised() -> None:
    netvlad = NetVLAD(8, clusters=4)
    out = netvlad(torch.randn(3, 8, 5, 5))
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    # Intra-normalisation then global L2: every cluster's block has norm 1/sqrt(K).
    assert torch.allclose(out.reshape(3, 4, 8).norm(dim=2), torch.full((3, 4), 0.5), atol=1e-5)


def test_netvlad_loupe_shapes_normalisation_and_input_forms() -> None:
    torch.manual_seed(0)
    loupe = NetVLADLoupe(24, clusters=6, output_dim=10).eval()
    tokens = torch.randn(2, 35, 24)
    assert loupe(tokens).shape == (2, 10)
    vlad = loupe.vlad(tokens)
    assert vlad.shape == (2, 24 * 6)
    assert torch.allclose(vlad.reshape(2, 24, 6).norm(dim=1), torch.full((2, 6), 1 / math.sqrt(6)), atol=1e-5)
    feature_map = tokens.transpose(1, 2).reshape(2, 24, 5, 7)
    assert torch.allclose(loupe(feature_map), loupe(tokens), atol=1e-6)


def test_netvlad_loupe_context_gating_scales_each_dimension_down() -> None:
    torch.manual_seed(0)
    gated = NetVLADLoupe(16, clusters=4, output_dim=12, gating=True).eval()
    ungated = NetVLADLoupe(16, clusters=4, output_dim=12, gating=False).eval()
    ungated.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("context_gating")})
    tokens = torch.randn(3, 20, 16)
    before, after = ungated(tokens), gated(tokens)
    gates = gated.context_gating.gates(before)
    assert ((gates > 0) & (gates < 1)).all()
    assert torch.allclose(after, before * gates, atol=1e-6)
    assert (after.abs() < before.abs()).all()


def test_netvlad_loupe_without_batch_norm_trains_learned_biases() -> None:
    loupe = NetVLADLoupe(8, clusters=4, output_dim=6, add_batch_norm=False)
    assert loupe.bn1 is None and loupe.context_gating.bn is None
    loupe(torch.randn(2, 9, 8)).sum().backward()
    assert loupe.cluster_biases.grad.abs().sum() > 0
    assert loupe.context_gating.gating_biases.grad.abs().sum() > 0


def test_build_aggregator_names_valid_parts_and_options() -> None:
    assert build_aggregator({"name": "netvlad", "clusters": 3}, 5).output_dim == 15
    with pytest.raises(ValueError, match="gem.*netvlad"):
        build_aggregator({"name": "vlad"}, 5)
    with pytest.raises(ValueError, match="clusters"):
        build_aggregator({"name": "netvlad", "num_clusters": 3}, 5)
