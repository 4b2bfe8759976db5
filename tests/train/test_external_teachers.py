"""Teachers from outside the package: a local torch.hub folder, an ONNX file, a timm hub folder.

Every teacher here is written by the test (no network): a tiny CNN whose weights
live in a safetensors file beside its ``hubconf.py``, the same network exported
to ONNX, and a timm test model saved in the model-hub folder format. What is
checked is how the pipeline treats an external teacher: its descriptors equal an
independent computation with its own preprocessing, a teacher of another
descriptor size trains a projection that is kept out of the student's weights,
and misconfigured specs fail with errors that name the field.
"""

from __future__ import annotations

import importlib.util
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.transforms.v2 import functional as TF

from tests.train.helpers import IMAGE_SIZE, same_weights, tiny_config
from vprdistill.losses.cross_metric import CrossMetricDistillationLoss
from vprdistill.losses.rkd import RelationalDistillationLoss
from vprdistill.losses.structural import StructuralDistillationLoss
from vprdistill.losses.triplet import triplet_margin_loss
from vprdistill.losses.types import TupleDescriptors
from vprdistill.models.external import load_external_model
from vprdistill.models.registry import build_model
from vprdistill.train import loop
from vprdistill.train.config import PACKAGE_CONFIG_DIR, load_config
from vprdistill.train.methods import DescriptorProjection, TrainingMethod
from vprdistill.train.teacher import FrozenTeacher

CPU = torch.device("cpu")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TEACHER_DIM = 24  # the student (resnet18-gem) has 512
FAST = ["data.max_train_queries=8", "data.val_split=", "mining.num_negatives=2"]

NET_SOURCE = '''
import torch
from torch import nn


class TinyDescriptor(nn.Module):
    """Conv, BatchNorm, pooling and a linear head: (B, 3, H, W) -> (B, dim), not normalised."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(16, dim)

    def forward(self, x):
        return self.head(self.body(x)) + 0.5  # an offset, so that normalising is not a no-op


class WithExtras(nn.Module):
    """BoQ-style output: (descriptor, something else)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x), torch.ones(x.shape[0], 5)
'''

HUBCONF = '''
dependencies = ["torch", "safetensors"]

from pathlib import Path

from safetensors.torch import load_file
from tiny_net import TinyDescriptor, WithExtras

HERE = Path(__file__).resolve().parent


def tiny(dim: int = 24):
    """The tiny descriptor network with the weights stored beside this file."""
    model = TinyDescriptor(dim)
    model.load_state_dict(load_file(str(HERE / f"tiny{dim}.safetensors")))
    return model


def tiny_pair(dim: int = 24):
    return WithExtras(tiny(dim))


def any_kwargs(**kwargs):
    """Stands in for a published entry whatever its arguments (the recipes' specs are checked with it)."""
    return tiny(24)


def _helper():
    return None
'''


def _net_module(folder: Path):
    spec = importlib.util.spec_from_file_location("tiny_net_reference", folder / "tiny_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_net(folder: Path, dim: int = TEACHER_DIM) -> torch.nn.Module:
    """The hub folder's network built here, independently of torch.hub, with the folder's weights."""
    net = _net_module(folder).TinyDescriptor(dim)
    net.load_state_dict(load_file(str(folder / f"tiny{dim}.safetensors")))
    return net.eval()


def _write_weights(folder: Path, dim: int, seed: int) -> None:
    torch.manual_seed(seed)
    net = _net_module(folder).TinyDescriptor(dim)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so they matter
        net.body[1].running_mean.uniform_(-0.5, 0.5)
        net.body[1].running_var.uniform_(0.5, 2.0)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / f"tiny{dim}.safetensors"))


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hub") / "tiny-hub"
    folder.mkdir()
    (folder / "tiny_net.py").write_text(textwrap.dedent(NET_SOURCE))
    (folder / "hubconf.py").write_text(textwrap.dedent(HUBCONF))
    _write_weights(folder, TEACHER_DIM, seed=11)
    _write_weights(folder, 512, seed=12)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five small photos of different sizes (resizing is part of the preprocessing under test)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for index, (height, width) in enumerate([(48, 64), (40, 40), (64, 48), (50, 70), (33, 45)]):
        # Smooth gradients plus noise: resizing them gives values that differ per channel and place.
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"photo{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _independent(net: torch.nn.Module, paths, size, mean, std) -> torch.Tensor:
    """Descriptors (N, D) in float64: resize, scale to [0, 1], (x − mean)/std, the network, L2 norm."""
    rows = []
    for path in paths:
        image = TF.resize(Image.open(path).convert("RGB"), list(size), antialias=True)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float64) / 255.0).permute(2, 0, 1)
        normalised = (pixels - torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)) / torch.tensor(
            std, dtype=torch.float64
        ).view(3, 1, 1)
        rows.append(normalised)
    with torch.no_grad():
        return F.normalize(net.double()(torch.stack(rows)), dim=1)


def _hub_teacher(hub_dir: Path, tmp_path: Path, size=(32, 40), **extra) -> FrozenTeacher:
    return FrozenTeacher.from_external(
        "torch_hub", f"{hub_dir}:tiny", size, CPU, kwargs={"dim": TEACHER_DIM},
        cache_dir=tmp_path / "cache", progress=False, **extra,
    )  # fmt: skip


# 1. Each kind of external teacher computes what its network computes.


def test_a_local_hub_folder_teacher_gives_the_networks_normalised_descriptors(hub_dir, images, tmp_path):
    teacher = _hub_teacher(hub_dir, tmp_path)
    assert teacher.descriptor_dim == TEACHER_DIM
    descriptors = teacher.describe_paths(images)
    expected = _independent(_reference_net(hub_dir), images, (32, 40), IMAGENET_MEAN, IMAGENET_STD)
    assert descriptors.shape == (len(images), TEACHER_DIM)
    assert torch.allclose(descriptors.double(), expected, atol=1e-5)
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(len(images)), atol=1e-6)

    # The fingerprint is stable across loads and follows the weights and the entry's arguments.
    again = _hub_teacher(hub_dir, tmp_path)
    wider = FrozenTeacher.from_external(
        "torch_hub", f"{hub_dir}:tiny", (32, 40), CPU, kwargs={"dim": 512}, cache_dir=tmp_path / "c", progress=False
    )
    assert again.fingerprint == teacher.fingerprint and wider.fingerprint != teacher.fingerprint
    assert wider.descriptor_dim == 512


def test_hub_weights_that_change_change_the_fingerprint_and_the_cache(hub_dir, images, tmp_path):
    folder = tmp_path / "hub-copy"
    folder.mkdir()
    for name in ("hubconf.py", "tiny_net.py", f"tiny{TEACHER_DIM}.safetensors"):
        (folder / name).write_bytes((hub_dir / name).read_bytes())
    first = _hub_teacher(folder, tmp_path)
    before = first.cached_path_descriptors({"places": images})["places"]
    _write_weights(folder, TEACHER_DIM, seed=99)
    second = _hub_teacher(folder, tmp_path)
    after = second.cached_path_descriptors({"places": images})["places"]
    assert second.fingerprint != first.fingerprint
    assert not torch.allclose(before, after, atol=1e-3)
    assert len(list((tmp_path / "cache" / "teacher_descriptors").glob("*.safetensors"))) == 2


def test_a_tuple_output_gives_its_first_element_unless_output_names_another(hub_dir):
    images = torch.randn(3, 3, 32, 32)
    first = load_external_model("torch_hub", f"{hub_dir}:tiny_pair")
    with torch.no_grad():
        expected = F.normalize(_reference_net(hub_dir)(images), dim=1)
        assert torch.allclose(first(images), expected, atol=1e-6)
        second = load_external_model("torch_hub", f"{hub_dir}:tiny_pair", output=1)
        assert torch.allclose(second(images), F.normalize(torch.ones(3, 5), dim=1))
    assert second.fingerprint != first.fingerprint
    with pytest.raises(ValueError, match="cannot take output 2 of its tuple output"):
        load_external_model("torch_hub", f"{hub_dir}:tiny_pair", output=2)(images)


def _export_onnx(net: torch.nn.Module, path: Path, size=(32, 40), dynamic_batch: bool = True) -> Path:
    example = torch.randn(2 if dynamic_batch else 1, 3, *size)
    torch.onnx.export(
        net.float().eval(), (example,), str(path), dynamo=False, opset_version=17,
        input_names=["images"], output_names=["descriptors"],
        dynamic_axes={"images": {0: "batch"}, "descriptors": {0: "batch"}} if dynamic_batch else None,
    )  # fmt: skip
    return path


# The TorchScript exporter is deprecated but quick for a tiny graph; ONNX Runtime reads either exporter's files.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_onnx_teacher_matches_the_torch_network_it_was_exported_from(hub_dir, images, tmp_path):
    net = _reference_net(hub_dir)
    path = _export_onnx(net, tmp_path / "tiny.onnx")
    model = load_external_model("onnx", path)
    batch = torch.randn(5, 3, 32, 40)
    with torch.no_grad():
        assert torch.allclose(model(batch), F.normalize(net(batch), dim=1), atol=1e-4)

    # Through the teacher's cache path: the same descriptors as the hub teacher of the same weights.
    onnx_teacher = FrozenTeacher.from_external("onnx", path, (32, 40), CPU, cache_dir=tmp_path / "c", progress=False)
    hub_teacher = _hub_teacher(hub_dir, tmp_path)
    assert onnx_teacher.descriptor_dim == TEACHER_DIM
    from_onnx = onnx_teacher.cached_path_descriptors({"places": images})["places"]
    assert torch.allclose(from_onnx, hub_teacher.describe_paths(images), atol=1e-4)
    assert onnx_teacher.fingerprint != hub_teacher.fingerprint

    # A graph with a fixed batch of 1 runs a batch of 5 one image at a time; a fixed size is enforced.
    fixed = load_external_model("onnx", _export_onnx(net, tmp_path / "fixed.onnx", dynamic_batch=False))
    with torch.no_grad():
        assert torch.allclose(fixed(batch), F.normalize(net(batch), dim=1), atol=1e-4)
    with pytest.raises(ValueError, match=r"takes 32x40 images, got 48x48; set the teacher's image_size to \[32, 40\]"):
        FrozenTeacher.from_external("onnx", tmp_path / "fixed.onnx", (48, 48), CPU, progress=False)


def _timm_folder(folder: Path, seed: int = 5) -> tuple[Path, torch.nn.Module]:
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder, model


def test_a_timm_hub_folder_teacher_loads_config_and_safetensors(images, tmp_path):
    folder, model = _timm_folder(tmp_path / "timm-folder")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert json.loads((folder / "config.json").read_text())["architecture"] == "test_resnet"
    teacher = FrozenTeacher.from_external("hf_hub", folder, (48, 48), CPU, cache_dir=tmp_path / "c", progress=False)
    assert teacher.descriptor_dim == model.num_features
    expected = _independent(model, images, (48, 48), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(teacher.describe_paths(images).double(), expected, atol=1e-5)

    # Other weights in the same folder layout: another fingerprint.
    other, _ = _timm_folder(tmp_path / "timm-other", seed=6)
    assert load_external_model("hf_hub", other).fingerprint != teacher.fingerprint


# 2. The teacher's own preprocessing.


def test_the_teachers_size_mean_and_std_are_applied(hub_dir, images, tmp_path):
    mean, std, size = (0.9, 0.1, 0.5), (0.1, 0.5, 0.2), (40, 48)
    teacher = _hub_teacher(hub_dir, tmp_path, size=size, mean=mean, std=std)
    net = _reference_net(hub_dir)
    descriptors = teacher.cached_path_descriptors({"places": images})["places"]
    expected = _independent(net, images, size, mean, std)
    assert torch.allclose(descriptors.double(), expected, atol=1e-5)
    # The test can fail: with ImageNet statistics the same images give other descriptors.
    imagenet = _independent(net, images, size, IMAGENET_MEAN, IMAGENET_STD)
    assert (imagenet - expected).abs().max() > 1e-2  # 1000x the tolerance above

    # A batch re-run (augmented student batches) reads ImageNet-normalised tensors: the same result.
    pixels = torch.stack([
        TF.to_dtype(TF.to_image(TF.resize(Image.open(p).convert("RGB"), list(size), antialias=True)), torch.float32, scale=True)
        for p in images
    ])  # fmt: skip
    imagenet_normalised = TF.normalize(pixels, list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert torch.allclose(teacher.describe(imagenet_normalised).double(), expected, atol=1e-5)

    # The normalisation keys the cache: the default statistics make a second file, not a stale hit.
    plain = _hub_teacher(hub_dir, tmp_path, size=size)
    assert torch.allclose(plain.cached_path_descriptors({"places": images})["places"].double(), imagenet, atol=1e-5)
    assert len(list((tmp_path / "cache" / "teacher_descriptors").glob("*.safetensors"))) == 2


# 3. A teacher of another descriptor size: a learned projection, for the terms that need one.


def _tuples(dim: int, seed: int, batch: int = 4, negatives: int = 3) -> TupleDescriptors:
    generator = torch.Generator().manual_seed(seed)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, dim, generator=generator, dtype=torch.float64), dim=-1)

    mask = torch.ones(batch, negatives, dtype=torch.bool)
    mask[1, 2] = mask[3, 1:] = False
    return TupleDescriptors(unit(batch), unit(batch), unit(batch, negatives), mask)


def test_projected_soft_and_cross_metric_terms_match_the_formula_and_hard_stays_on_the_student():
    student, teacher = _tuples(12, seed=1), _tuples(7, seed=2)
    projection = DescriptorProjection(12, 7).double()
    output = CrossMetricDistillationLoss(margin=0.1).__call__(student, teacher, student.map(projection))

    with torch.no_grad():

        def p(x):
            return F.normalize(x @ projection.linear.weight.T + projection.linear.bias, dim=-1)

        s_a, s_p, s_n = p(student.anchor), p(student.positive), p(student.negatives)
        t_a, t_p, t_n = teacher.anchor, teacher.positive, teacher.negatives
        soft, cross = [], []
        for b in range(4):
            valid = student.negative_mask[b]
            negatives = ((s_n[b][valid] - t_n[b][valid]) ** 2).sum(dim=1).mean()
            soft.append(((s_a[b] - t_a[b]) ** 2).sum() + ((s_p[b] - t_p[b]) ** 2).sum() + negatives)
            cross.append(((s_a[b] - t_p[b]) ** 2).sum() + ((s_p[b] - t_a[b]) ** 2).sum())
        hard = triplet_margin_loss(student.anchor, student.positive, student.negatives, 0.1, student.negative_mask)
    assert output.terms["soft"] == pytest.approx(float(torch.stack(soft).mean()), rel=1e-9)
    assert output.terms["cross_metric"] == pytest.approx(float(torch.stack(cross).mean()), rel=1e-9)
    assert output.terms["hard"] == pytest.approx(float(hard), rel=1e-9)
    output.total.backward()
    assert projection.linear.weight.grad is not None and projection.linear.weight.grad.abs().sum() > 0

    # Without the projection the sizes cannot be compared, and the error says what to do.
    with pytest.raises(ValueError, match="projection: auto"):
        CrossMetricDistillationLoss()(student, teacher)


def test_the_structural_kl_reads_the_student_and_only_its_regression_the_projection():
    student, teacher = _tuples(12, seed=3), _tuples(7, seed=4)
    projection = DescriptorProjection(12, 7).double()
    loss = StructuralDistillationLoss(w_hard=0.0, w_regression=1.0, weighting="uniform")
    projected = loss(student, teacher, student.map(projection))
    without_regression = StructuralDistillationLoss(w_hard=0.0, weighting="uniform")(student, teacher)
    assert projected.terms["kl"] == pytest.approx(without_regression.terms["kl"], rel=1e-12)
    with torch.no_grad():
        s = student.map(projection)
        valid = student.negative_mask
        regression = [
            ((s.anchor[b] - teacher.anchor[b]) ** 2).sum() + ((s.positive[b] - teacher.positive[b]) ** 2).sum()
            + ((s.negatives[b][valid[b]] - teacher.negatives[b][valid[b]]) ** 2).sum(dim=1).mean()
            for b in range(4)
        ]  # fmt: skip
    assert projected.terms["regression"] == pytest.approx(float(torch.stack(regression).mean()), rel=1e-9)
    # RKD matches distances within each space: it needs no projection and takes none.
    assert not RelationalDistillationLoss().compares_across_spaces
    assert not StructuralDistillationLoss().compares_across_spaces


def _method(*teachers: dict) -> str:
    method = {"name": "distill", "teachers": list(teachers)}
    return "method=" + yaml.safe_dump(method, default_flow_style=True, width=10_000).strip()


def _hub_spec(hub_dir: Path, dim: int = TEACHER_DIM, **extra) -> dict:
    return {"torch_hub": f"{hub_dir}:tiny", "kwargs": {"dim": dim}, "loss": {"name": "soft_cross_metric"}, **extra}


def test_projections_are_built_only_where_sizes_differ_and_the_loss_compares_across_spaces(synth_tiny, hub_dir):
    specs = [
        _hub_spec(hub_dir),  # 24 vs 512, soft + cross-metric: projected
        _hub_spec(hub_dir, loss={"name": "rkd"}),  # relational: none
        _hub_spec(hub_dir, dim=512),  # same size: none
        _hub_spec(hub_dir, dim=512, projection=True),  # asked for: projected
        _hub_spec(hub_dir, loss={"name": "structural", "weighting": "uniform"}),  # KL only: none
    ]
    method = TrainingMethod(tiny_config(synth_tiny, [*FAST, _method(*specs)]), CPU, student_dim=512)
    shapes = {slot.name: slot.projection and tuple(slot.projection.linear.weight.shape) for slot in method.teachers}
    assert shapes == {"rgb0": (TEACHER_DIM, 512), "rgb1": None, "rgb2": None, "rgb3": (512, 512), "rgb4": None}
    assert len(method.parameters()) == 4  # two weights and two biases
    assert set(method.state_dict()) == {
        "rgb0.linear.weight",
        "rgb0.linear.bias",
        "rgb3.linear.weight",
        "rgb3.linear.bias",
    }


class _Recorder:
    """Keeps the TrainingMethod that ``loop.train`` builds, and its projections' starting weights."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.methods: list[TrainingMethod] = []
        self.initial: list[dict[str, torch.Tensor]] = []
        recorder = self

        class Recording(TrainingMethod):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                recorder.methods.append(self)
                recorder.initial.append({k: v.clone() for k, v in self.state_dict().items()})

        monkeypatch.setattr(loop, "TrainingMethod", Recording)


def test_training_with_a_smaller_teacher_trains_a_projection_kept_out_of_the_student(
    synth_tiny, hub_dir, tmp_path, monkeypatch
):
    recorder = _Recorder(monkeypatch)
    config = tiny_config(synth_tiny, [*FAST, _method(_hub_spec(hub_dir))], epochs=2)
    result = loop.train(config, tmp_path / "run")
    (method,) = recorder.methods
    (slot,) = method.teachers
    assert slot.projection is not None and slot.teacher.descriptor_dim == TEACHER_DIM
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {"hard", "soft", "cross_metric"} <= set(records[0]["loss"])

    final = method.state_dict()
    assert set(final) == {"rgb0.linear.weight", "rgb0.linear.bias"}
    assert not torch.equal(final["rgb0.linear.weight"], recorder.initial[0]["rgb0.linear.weight"]), (
        "the projection is not trained with the student"
    )
    # The loop state keeps the projection for resuming ...
    state = torch.load(result.run_dir / "last_state.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(state["projections"][k], v) for k, v in final.items())
    # ... and the student's weights files hold the student alone.
    student_keys = set(build_model({"preset": "resnet18-gem", "image_size": [IMAGE_SIZE, IMAGE_SIZE]}).state_dict())
    for name in ("best.safetensors", "last.safetensors"):
        saved = load_file(str(result.run_dir / name))
        assert set(saved) == student_keys
        assert not any(tensor.shape[:1] == (TEACHER_DIM,) for tensor in saved.values())


def test_place_batches_carry_the_student_through_the_projection_too(hub_dir, tmp_path_factory, tmp_path, monkeypatch):
    from vprdistill.data.synth import generate

    root = generate(tmp_path_factory.mktemp("places"), preset="tiny", seed=3, image_size=32, workers=1,
                    progress=False, train_places=8, views_per_place=3)  # fmt: skip
    recorder = _Recorder(monkeypatch)
    spec = _hub_spec(hub_dir, loss={"name": "soft_cross_metric", "w_hard": 0.0})
    config = load_config("baseline/synth-resnet18-gem", [
        f"data.dataset={root}", f"data.places={root / 'places'}", "data.image_size=[32, 32]", "model=resnet18-gem",
        "epochs=1", "device=cpu", "progress=false", "optim.lr=0.001", "data.places_per_batch=4",
        "data.views_per_place=3", "mining.num_negatives=3", "data.max_val_queries=8", _method(spec),
    ])  # fmt: skip
    result = loop.train(config, tmp_path / "run")
    terms = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert {"ms", "soft", "cross_metric"} <= set(terms)
    (method,) = recorder.methods
    assert not torch.equal(method.state_dict()["rgb0.linear.weight"], recorder.initial[0]["rgb0.linear.weight"])
    assert method.teachers[0].places.shape[1] == TEACHER_DIM  # the place images' cache, in the teacher's space


def test_a_resumed_run_with_a_projection_equals_an_uninterrupted_one(synth_tiny, hub_dir, tmp_path):
    def config(epochs: int):
        return tiny_config(synth_tiny, [*FAST, _method(_hub_spec(hub_dir))], epochs=epochs)

    straight = loop.train(config(2), tmp_path / "straight").run_dir
    interrupted = loop.train(config(1), tmp_path / "resumed").run_dir
    resumed = loop.train(config(2), interrupted, resume=True).run_dir
    assert same_weights(straight / "last.safetensors", resumed / "last.safetensors")


# 4. Clear errors for misconfigured specs.


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        (
            {"run": "runs/t", "onnx": "t.onnx"},
            ValueError,
            r"method.teachers\[0\]: give one teacher source, got both 'run' and 'onnx'",
        ),
        (
            {"onnx": "/nowhere/t.onnx"},
            FileNotFoundError,
            r"method.teachers\[0\]: onnx teacher /nowhere/t.onnx: no such file",
        ),
        (
            {"hf_hub": "/nowhere/folder"},
            FileNotFoundError,
            r"method.teachers\[0\]: hf_hub teacher '/nowhere/folder': no such directory",
        ),
        ({"torch_hub": "/nowhere/hub:tiny"}, FileNotFoundError, r"no such directory /nowhere/hub"),
        (
            {"torch_hub": "HUB:nope"},
            ValueError,
            r"method.teachers\[0\]: torch_hub teacher .*: no entry 'nope'; the repository offers any_kwargs, tiny, tiny_pair",
        ),
        ({"torch_hub": "HUB"}, ValueError, r"expected 'owner/repo:entry' or 'DIR:entry'"),
        (
            {"torch_hub": "HUB:tiny", "input": "seg"},
            ValueError,
            r"method.teachers\[0\].input: an external teacher \(torch_hub\) reads RGB",
        ),
        ({"torch_hub": "HUB:tiny", "std": [0.2, 0.0, 0.2]}, ValueError, r"teacher std: every value must be > 0"),
        ({"torch_hub": "HUB:tiny", "mean": [0.5, 0.5]}, ValueError, r"teacher mean: expected three numbers"),
        ({"torch_hub": "HUB:tiny", "kwargs": [1]}, ValueError, r"method.teachers\[0\].kwargs: expected a mapping"),
        ({"run": "runs/t", "mean": [0.5, 0.5, 0.5]}, ValueError, r"mean apply to external teachers"),
        (
            {"torch_hub": "HUB:tiny", "loss": {"name": "rkd"}, "projection": True},
            ValueError,
            r"projection: true, but its loss",
        ),
        ({"torch_hub": "HUB:tiny", "projection": "always"}, ValueError, r"projection: expected auto, true or false"),
        ({"input": "rgb"}, ValueError, r"method.teachers\[0\]: missing 'run' .* 'torch_hub', 'hf_hub' or 'onnx'"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 20 else None,
)
def test_misconfigured_teacher_specs_fail_with_errors_naming_the_field(
    synth_tiny, hub_dir, tmp_path, spec, error, message
):
    spec = {
        key: (value.replace("HUB", str(hub_dir)) if isinstance(value, str) else value) for key, value in spec.items()
    }
    config = tiny_config(synth_tiny, [*FAST, _method(spec)])
    with pytest.raises(error, match=message):
        TrainingMethod(config, CPU, student_dim=512)


RECIPES = sorted(
    str(path.relative_to(PACKAGE_CONFIG_DIR).with_suffix(""))
    for path in (PACKAGE_CONFIG_DIR / "recipes").glob("*.yaml")
)


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipes_teacher_spec_is_accepted_with_its_hub_swapped_for_a_local_one(name, hub_dir):
    places = ["data.places=/data/gsv-cities"] if "gsv" in name else []  # the GSV-Cities recipes train on places
    config = load_config(name, ["data.dataset=/data/pitts30k", *places])
    if config.method["name"] != "distill":
        assert name.split("/")[1].startswith("gsv-"), f"{name}: only the student bases train without a teacher"
        return
    for spec in config.method["teachers"]:
        assert set(spec) & {"torch_hub", "hf_hub", "onnx"}, f"{name}: the recipes name public teachers"
        spec["torch_hub"] = f"{hub_dir}:any_kwargs"
    method = TrainingMethod(config, CPU, student_dim=build_model(config.model).descriptor_dim)
    for slot in method.teachers:
        needs = slot.loss.compares_across_spaces
        assert (slot.projection is not None) == needs, f"{name}: {slot.name}"


def test_a_hub_folder_without_hubconf_and_a_timm_folder_without_safetensors_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no hubconf.py"):
        load_external_model("torch_hub", f"{tmp_path / 'empty'}:tiny")
    folder, _ = _timm_folder(tmp_path / "timm")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors"):
        load_external_model("hf_hub", folder)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"num_classes": 0}))
    with pytest.raises(ValueError, match="has no 'architecture'"):
        load_external_model("hf_hub", folder)


def test_training_with_an_onnx_teacher(synth_tiny, hub_dir, tmp_path, monkeypatch):
    """An ONNX teacher through the real loop: its cache in the teacher's space, the projection trained, RKD too."""
    path = _export_onnx(_reference_net(hub_dir), tmp_path / "teacher.onnx", size=(IMAGE_SIZE, IMAGE_SIZE))
    recorder = _Recorder(monkeypatch)
    specs = [
        {"onnx": str(path), "image_size": [IMAGE_SIZE, IMAGE_SIZE], "loss": {"name": "soft_cross_metric"}},
        {"onnx": str(path), "image_size": [IMAGE_SIZE, IMAGE_SIZE], "loss": {"name": "rkd"}},
    ]
    monkeypatch.setenv("VPRDISTILL_CACHE", str(tmp_path / "cache"))
    config = tiny_config(synth_tiny, [*FAST, _method(*specs)])
    result = loop.train(config, tmp_path / "run")
    (record,) = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["tuples"] > 0 and all(math.isfinite(v) for v in record["loss"].values())
    (method,) = recorder.methods
    soft, relational = method.teachers
    assert soft.teacher.descriptor_dim == relational.teacher.descriptor_dim == TEACHER_DIM
    assert soft.projection is not None and relational.projection is None  # relational terms need none
    assert not torch.equal(method.state_dict()["rgb0.linear.weight"], recorder.initial[0]["rgb0.linear.weight"])
    assert list((tmp_path / "cache" / "teacher_descriptors").glob("*.safetensors")), "the ONNX teacher's cache"
