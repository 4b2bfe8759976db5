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


def _official_loupe_reference(loupe: NetVLADLoupe, tokens: torch.Tensor, samples: int) -> torch.Tensor:
    """The Loupe formula of the TSCM/PointNetVLAD code, in float64, from ``loupe``'s weights.

    The official head takes ``(B, C, N, 1)``, transposes dims 1 and 3 and views the
    result as ``(-1, samples, feature_size)``; no BatchNorm is applied (bn2 is unused).
    """
    w1 = loupe.cluster_weights.detach().double()
    w2 = loupe.cluster_weights2.detach().double()
    hidden = loupe.hidden1_weights.detach().double()
    biases = loupe.cluster_biases.detach().double()
    gating_w = loupe.context_gating.gating_weights.detach().double()
    gating_b = loupe.context_gating.gating_biases.detach().double()
    size, clusters = w1.shape
    x = tokens.double().permute(0, 2, 1).unsqueeze(-1)  # (B, C, N, 1), as the official callers pass it
    x = x.transpose(1, 3).contiguous().view(-1, samples, size)
    assign = torch.softmax(x @ w1 + biases, dim=-1)
    a = assign.sum(-2, keepdim=True) * w2
    vlad = (assign.transpose(2, 1) @ x).transpose(2, 1) - a
    vlad = vlad / vlad.norm(dim=1, keepdim=True)
    vlad = vlad.reshape(-1, clusters * size)
    vlad = vlad / vlad.norm(dim=1, keepdim=True)
    vlad = vlad @ hidden
    return vlad * torch.sigmoid(vlad @ gating_w + gating_b)


def _no_batch_norm(module: torch.nn.Module) -> bool:
    return not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


@pytest.mark.parametrize(
    ("tokens_shape", "options", "samples"),
    [
        ((2, 14, 12), {"token_split": 2}, 28),  # like the teacher heads: each token in two halves
        ((2, 14, 12), {}, 14),  # whole tokens, no BatchNorm
        ((2, 9, 20), {"subvector_dim": 9}, 20),  # like the student: N·C values re-cut every N
        ((3, 6, 8), {"subvector_dim": 12}, 4),  # sub-vectors that straddle token boundaries
    ],
)
def test_netvlad_loupe_matches_the_official_formula(
    tokens_shape: tuple[int, int, int], options: dict, samples: int
) -> None:
    torch.manual_seed(0)
    channels = tokens_shape[2]
    loupe = NetVLADLoupe(
        channels, clusters=5, output_dim=7, add_batch_norm=False, output_batch_norm=False, **options
    ).double()
    assert _no_batch_norm(loupe) and loupe.bn2 is None
    tokens = torch.randn(*tokens_shape, dtype=torch.float64)
    expected = _official_loupe_reference(loupe, tokens, samples)
    assert expected.shape == (tokens_shape[0], 7)
    assert torch.allclose(loupe(tokens), expected, atol=1e-12, rtol=0)
    # Training mode changes nothing without BatchNorm (single images work too).
    assert torch.allclose(loupe.train()(tokens[:1]), expected[:1], atol=1e-12, rtol=0)


def test_netvlad_loupe_regrouping_is_a_memory_view_not_a_transpose() -> None:
    tokens = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    split = NetVLADLoupe(6, clusters=2, output_dim=3, token_split=2)
    assert split.feature_dim == 3 and split.cluster_weights.shape == (3, 2)
    halves = split.local_features(tokens)
    assert halves.shape == (2, 8, 3)
    assert torch.equal(halves[:, 0::2], tokens[..., :3]) and torch.equal(halves[:, 1::2], tokens[..., 3:])
    reviewed = NetVLADLoupe(6, clusters=2, output_dim=3, subvector_dim=4).local_features(tokens)
    assert reviewed.shape == (2, 6, 4)
    assert reviewed[0, 1].tolist() == [4.0, 5.0, 6.0, 7.0]  # the end of token 0 and the start of token 1
    assert torch.equal(reviewed, tokens.reshape(2, 6, 4))
    assert not torch.equal(reviewed, tokens.transpose(1, 2).reshape(2, 6, 4))  # not channel-major
    # A map gives the same vectors as its tokens.
    feature_map = tokens.transpose(1, 2).reshape(2, 6, 2, 2)
    assert torch.equal(split.local_features(feature_map), halves)


def test_netvlad_loupe_output_batch_norm_switch() -> None:
    torch.manual_seed(0)
    with_bn2 = NetVLADLoupe(8, clusters=4, output_dim=6, add_batch_norm=False)
    assert isinstance(with_bn2.bn2, torch.nn.BatchNorm1d) and not _no_batch_norm(with_bn2)
    without = NetVLADLoupe(8, clusters=4, output_dim=6, add_batch_norm=False, output_batch_norm=False)
    assert without.bn2 is None and _no_batch_norm(without)
    without.load_state_dict({k: v for k, v in with_bn2.state_dict().items() if not k.startswith("bn2")})
    tokens = torch.randn(4, 10, 8)
    with torch.no_grad():
        with_bn2.bn2.weight.fill_(3.0)  # applied: changes the output; absent: cannot
        with_bn2.eval()
        assert not torch.allclose(with_bn2(tokens), without.eval()(tokens))
        ungated = with_bn2.vlad(tokens) @ with_bn2.hidden1_weights
        assert torch.allclose(without(tokens), without.context_gating(ungated), atol=1e-6)


def test_netvlad_loupe_regrouping_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match="token_split 3 does not divide the token width 8"):
        NetVLADLoupe(8, token_split=3)
    with pytest.raises(ValueError, match="token_split or subvector_dim"):
        NetVLADLoupe(8, token_split=2, subvector_dim=4)
    with pytest.raises(ValueError, match="subvector_dim must be a positive"):
        NetVLADLoupe(8, subvector_dim=0)
    loupe = NetVLADLoupe(8, clusters=2, output_dim=3, subvector_dim=6).eval()
    assert loupe(torch.randn(1, 3, 8)).shape == (1, 3)  # 24 values = 4 vectors of 6
    with pytest.raises(ValueError, match="5 tokens of 8 channels do not cut into vectors of 6"):
        loupe(torch.randn(1, 5, 8))
