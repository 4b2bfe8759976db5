"""Presets: descriptor shapes and normalisation, parameter counts, overrides and errors."""

from __future__ import annotations

import pytest
import torch

from vprdistill.models import PlaceModel, build_model, list_presets, resolve_config
from vprdistill.models.registry import describe_preset

TINY_PRESETS = ["resnet18-gem", "tscm-teacher-tiny", "tscm-student-tiny", "structvpr-rgb-tiny", "structvpr-seg-tiny"]


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_tiny_presets_give_unit_descriptors_and_local_features(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert isinstance(model, PlaceModel) and model.config["name"] == name
    x = torch.rand(2, model.input_channels, 64, 64)
    with torch.no_grad():
        descriptors = model(x)
        local = model.local_features(x)
    assert descriptors.shape == (2, model.descriptor_dim)
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(descriptors[0], descriptors[1])
    side = 64 // (32 if name == "resnet18-gem" else 16)  # the whole ResNet-18, or cut after layer3
    assert local.shape == (2, 512 if name == "resnet18-gem" else 256, side, side)
    assert sum(_parameters(part) for part in model.parts().values()) == _parameters(model)


def test_tiny_teacher_and_student_descriptors_are_comparable_at_any_size() -> None:
    teacher, student = build_model("tscm-teacher-tiny").eval(), build_model("tscm-student-tiny").eval()
    assert teacher.descriptor_dim == student.descriptor_dim == 512
    for size in (48, 96, 128):
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            assert teacher(x).shape == student(x).shape == (1, 512)
            assert teacher.local_features(x).shape == (1, 256, size // 16, size // 16)


def test_tscm_local_features_are_the_resnet_stage3_map() -> None:
    model = build_model("tscm-student-tiny").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.local_features(x), model.net.cnn(x))


# Counted by instantiating the official TeacherNet / StudentNet (networks/tscm.py) with random
# weights: the whole teacher, 125,003,266 (2,048 of them the never-applied bn2 of its three heads,
# 1 the GeM of its unused backboneR), and the student's Stu_Backbone, 12,699,777 (512 in bn2); the
# official StudentNet also holds a var_head and a teacher backbone it never uses.
OFFICIAL_TEACHER_PARAMETERS = 125_003_266
OFFICIAL_STUDENT_USED_PARAMETERS = 12_699_777


def test_official_presets_have_the_official_parameter_counts() -> None:
    with torch.device("meta"):
        teacher, student = build_model("tscm-teacher"), build_model("tscm-student")
    assert abs(_parameters(teacher) / OFFICIAL_TEACHER_PARAMETERS - 1) < 0.005
    assert abs(_parameters(student) / OFFICIAL_STUDENT_USED_PARAMETERS - 1) < 0.005
    # Exactly the official modules without the unused ones.
    assert _parameters(teacher) == OFFICIAL_TEACHER_PARAMETERS - 2048 - 1
    assert _parameters(student) == OFFICIAL_STUDENT_USED_PARAMETERS - 512
    parts = {name: _parameters(part) for name, part in teacher.parts().items()}
    assert parts["vit"] == 85_646_592  # ViT-B/16 children: no head, no pos_embed, no cls_token
    assert parts["head_fused"] == 512 * 64 * 2 + 64 * 512 * 512 + 64 + 512 * 512 + 512


def test_official_presets_build_the_official_structure() -> None:
    with torch.device("meta"):
        teacher, student = build_model("tscm-teacher").net, build_model("tscm-student").net
    for head, width in ((teacher.head_cnn, 256), (teacher.head_fused, 512), (teacher.head_vit, 256)):
        assert (head.clusters, head.feature_dim, head.in_channels) == (64, width, 2 * width)
    assert (student.token_head.clusters, student.token_head.feature_dim, student.token_head.in_channels) == (
        64,
        196,
        768,
    )
    for net in (teacher, student):
        assert not any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for m in net.modules()
            if m not in set(net.cnn.modules())
        )
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in teacher.fusion.modules())
    assert teacher.fusion.vit_from_cnn.dropout.p == 0.0
    assert teacher.vit.vit.pos_embed is None and teacher.vit.vit.cls_token is None
    # Both branches take the pipeline's ImageNet-normalised input as it is, as officially.
    assert teacher.cnn.input_norm is None and teacher.vit.input_norm is None


def test_official_student_takes_224_and_rejects_sizes_its_head_cannot_cut() -> None:
    torch.manual_seed(0)
    student = build_model("tscm-student").eval()
    with torch.no_grad():
        assert student(torch.rand(1, 3, 224, 224)).shape == (1, 2048)
        with pytest.raises(ValueError, match="do not cut into vectors of 196"):
            student(torch.rand(1, 3, 192, 192))


def test_fulltoken_variants_keep_the_previous_structure() -> None:
    with torch.device("meta"):
        teacher, student = build_model("tscm-teacher-fulltoken"), build_model("tscm-student-fulltoken")
    assert _parameters(teacher) == 125_160_449 and _parameters(student) == 12_633_953
    assert teacher.net.head_fused.clusters == 32 and teacher.net.head_fused.feature_dim == 1024
    assert isinstance(teacher.net.head_fused.bn2, torch.nn.BatchNorm1d)
    assert isinstance(teacher.net.fusion.vit_from_cnn.norm1, torch.nn.LayerNorm)
    assert teacher.net.vit.vit.pos_embed is not None
    assert teacher.net.vit.input_norm.mean == (0.5, 0.5, 0.5)  # the ViT-B/16 weights' statistics
    assert student.net.token_head.clusters == 16 and student.net.token_head.feature_dim == 768
    assert "our choice" in describe_preset("tscm-teacher-fulltoken")
    assert "our choice" in describe_preset("tscm-student-fulltoken")
    assert "official" in describe_preset("tscm-teacher") and "official" in describe_preset("tscm-student")
    assert all(describe_preset(name) for name in list_presets())


def test_full_size_parameter_counts() -> None:
    # Built on the meta device: the sizes are real, no memory is used and nothing is downloaded.
    with torch.device("meta"):
        teacher, student = build_model("tscm-teacher"), build_model("tscm-student")
    assert teacher.descriptor_dim == student.descriptor_dim == 2048
    student_parts = {name: _parameters(part) for name, part in student.parts().items()}
    assert student_parts["cnn"] == 8_543_296
    assert student_parts["patch_embed"] == 3 * 768 * 16 * 16 + 768
    assert student_parts["token_proj"] == 256 * 1024 + 1024
    with torch.no_grad():
        assert teacher(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 2048)
        assert student(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 2048)


def test_every_preset_builds_with_its_stated_sizes() -> None:
    with torch.device("meta"):
        sizes = {name: build_model(name) for name in list_presets()}
    assert sizes["resnet18-netvlad"].descriptor_dim == 256 * 64
    assert sizes["structvpr-seg"].input_channels == 10 and sizes["structvpr-seg-tiny"].input_channels == 10
    assert sizes["structvpr-rgb"].descriptor_dim == sizes["structvpr-seg"].descriptor_dim


def test_preset_override_key_by_key() -> None:
    model = build_model({"preset": "tscm-student-tiny", "descriptor_dim": 256})
    assert model.descriptor_dim == 256 and "projection" in model.parts()
    model = build_model("tscm-student-tiny", token_head={"clusters": 4})
    assert model.net.token_head.clusters == 4 and model.net.token_head.output_dim == 64
    assert model.config["token_head"] == {"name": "netvlad-loupe", "clusters": 4, "output_dim": 64}
    assert build_model(model.config).config == model.config  # the config rebuilds the model


def test_seg_input_channels_are_a_config_field() -> None:
    model = build_model("structvpr-seg-tiny", input_channels=6)
    assert model.input_channels == 6
    assert model(torch.rand(2, 6, 32, 32)).shape == (2, 256)
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        model(torch.rand(2, 3, 32, 32))


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="tscm-student-tiny"):
        build_model("tscm-studnet")
    with pytest.raises(ValueError, match="descriptor_dim"):
        build_model({"preset": "tscm-student-tiny", "descriptor_dims": 3})
    with pytest.raises(ValueError, match="cross-attention"):
        build_model("tscm-teacher-tiny", fusion={"name": "concat"})
    with pytest.raises(ValueError, match="generic"):
        resolve_config({"backbone": {"name": "resnet18"}})
