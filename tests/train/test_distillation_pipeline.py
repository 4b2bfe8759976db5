"""The distillation pipeline: frozen teachers, their descriptor cache, multi-teacher terms, teacher mining, resume.

Teachers here are freshly initialised tiny models saved as run folders: what is
tested is how the pipeline treats a teacher, not what a trained one knows.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.train.helpers import IMAGE_SIZE, tiny_config
from vprdistill.data.images import load_image
from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.data.readers import open_dataset
from vprdistill.data.transforms import build_transform
from vprdistill.eval.extract import compute_descriptors
from vprdistill.models.checkpoint import load_model, save_model
from vprdistill.models.registry import build_model
from vprdistill.train import loop
from vprdistill.train.inputs import InputLoader, input_paths
from vprdistill.train.methods import TrainingMethod
from vprdistill.train.mining import MinedTuple, TripletMiner, miner_from_config
from vprdistill.train.teacher import FrozenTeacher
from vprdistill.train.tuples import (
    TupleBatch,
    TupleDataset,
    collate_tuples,
    gather_cached_descriptors,
    split_tuple_descriptors,
)

CPU = torch.device("cpu")
# Fewer, smaller tuples than the shared tiny config and no validation split: these runs
# test what happens to teachers and tuples, not what the student learns.
FAST = ["data.max_train_queries=8", "data.val_split=", "mining.num_negatives=2"]
RGB_LOSS = {"name": "soft_cross_metric", "w_hard": 1.0, "w_soft": 1.0, "w_cm": 1.0}
SEG_LOSS = {"name": "structural", "w_hard": 0.0, "w_kd": 1.0, "weighting": {"name": "partition"}}


def _save_teacher(folder: Path, preset: str, seed: int) -> Path:
    torch.manual_seed(seed)
    save_model(build_model(preset), folder / "best")
    return folder


@pytest.fixture(scope="module")
def rgb_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RGB teacher with the student's 512-d descriptor (the cross-metric loss compares them directly)."""
    return _save_teacher(tmp_path_factory.mktemp("rgb_teacher"), "resnet18-gem", seed=101)


@pytest.fixture(scope="module")
def rgb_teacher_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_teacher(tmp_path_factory.mktemp("rgb_teacher_b"), "resnet18-gem", seed=202)


@pytest.fixture(scope="module")
def seg_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A StructVPR seg-branch teacher: one-hot structural maps in, 256-d descriptors out."""
    return _save_teacher(tmp_path_factory.mktemp("seg_teacher"), "structvpr-seg-tiny", seed=303)


def _method_override(*teachers: dict) -> dict:
    return {"method": {"name": "distill", "teachers": list(teachers)}}


def _rgb(run: Path, **extra) -> dict:
    return {"run": str(run), "input": "rgb", "loss": RGB_LOSS, **extra}


def _seg(run: Path, **extra) -> dict:
    return {"run": str(run), "input": "seg", "loss": SEG_LOSS, **extra}


def _file_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _hand_batch(dataset: PlaceDataset, config, negatives_per_tuple=(2, 1, 2, 1)) -> TupleBatch:
    """A batch of hand-made tuples (true positives, true negatives, padded negative slots)."""
    miner = TripletMiner(dataset, margin=0.1, negative_samples=10, num_negatives=2)
    tuples = [
        MinedTuple(int(q), int(miner.positives[q][0]), miner.negative_pool(int(q))[[0, 5]][:count])
        for q, count in zip(miner.trainable_queries[:4], negatives_per_tuple)
    ]
    query_paths, database_paths = input_paths(dataset, config.data.input)
    tuple_set = TupleDataset(tuples, query_paths, database_paths, InputLoader(config.data, train=True))
    return collate_tuples([tuple_set[i] for i in range(len(tuple_set))])


def _student() -> torch.nn.Module:
    torch.manual_seed(7)
    return build_model("resnet18-gem").train()


def _expected_kd_terms(student_flat: torch.Tensor, teacher_flat: torch.Tensor, batch: TupleBatch) -> dict:
    """TSCM's soft and cross-metric terms in float64, from flat (queries, positives, negatives) descriptors."""
    s, t = student_flat.double(), teacher_flat.double()
    size, mask = batch.batch_size, batch.negative_mask
    s_a, s_p, s_n = s[:size], s[size : 2 * size], s[2 * size :]
    t_a, t_p, t_n = t[:size], t[size : 2 * size], t[2 * size :]
    soft, row = [], 0
    for b in range(size):
        count = int(mask[b].sum())
        negatives = ((s_n[row : row + count] - t_n[row : row + count]) ** 2).sum(dim=1).mean()
        row += count
        soft.append(((s_a[b] - t_a[b]) ** 2).sum() + ((s_p[b] - t_p[b]) ** 2).sum() + negatives)
    cross = ((s_a - t_p) ** 2).sum(dim=1) + ((s_p - t_a) ** 2).sum(dim=1)
    return {"soft": float(torch.stack(soft).mean()), "cross_metric": float(cross.mean())}


# 1. A training step with a frozen teacher.


@pytest.mark.parametrize("augment", [False, True], ids=["cached-teacher", "teacher-rerun-on-augmented-batch"])
def test_a_training_step_moves_the_student_and_leaves_the_frozen_teacher_untouched(synth_tiny, rgb_teacher, augment):
    config = tiny_config(synth_tiny, [_method_override(_rgb(rgb_teacher))], **{"data.augment": str(augment).lower()})
    dataset = open_dataset(synth_tiny, split="train")
    method = TrainingMethod(config, CPU)
    method.prepare(dataset)
    (slot,) = method.teachers
    assert slot.use_cache is (not augment)
    teacher = slot.teacher.model
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}  # weights and BatchNorm buffers
    student = _student()
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)

    torch.manual_seed(0)
    batch = _hand_batch(dataset, config)
    descriptors = student(batch.images)
    output = method.loss(batch, split_tuple_descriptors(descriptors, batch))
    optimizer.zero_grad()
    output.total.backward()
    optimizer.step()

    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters()), "a gradient reached the teacher"
    assert not teacher.training
    changed = [k for k, v in teacher.state_dict().items() if not torch.equal(v, teacher_before[k])]
    assert not changed, f"teacher tensors changed: {changed[:3]}"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    moved = [k for k, v in student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert len(moved) > len(student_before) // 2, "the optimiser step barely moved the student"

    # The distillation terms are there, and they are computed against the teacher's
    # descriptors of exactly the batch's images (the augmented views when augmenting),
    # re-derived here with a fresh float64 copy of the teacher.
    assert {"hard", "soft", "cross_metric", "total"} <= set(output.terms)
    reference = load_model(rgb_teacher).double()
    with torch.no_grad():
        expected = _expected_kd_terms(descriptors.detach(), reference(batch.images.double()), batch)
    for name in ("soft", "cross_metric"):
        assert output.terms[name] == pytest.approx(expected[name], rel=1e-4), name
        assert output.terms[name] > 0.01
    assert output.terms["total"] == pytest.approx(
        output.terms["hard"] + output.terms["soft"] + output.terms["cross_metric"], rel=1e-5
    )
    if augment:
        # The check above can tell views apart: the un-augmented images give a value well outside its tolerance.
        plain = build_transform((IMAGE_SIZE, IMAGE_SIZE))
        query_paths, database_paths = input_paths(dataset, "rgb")
        paths = [query_paths[q] for q in batch.query_index] + [database_paths[p] for p in batch.positive_index]
        paths += [database_paths[n] for n in batch.negative_index[batch.negative_mask]]
        with torch.no_grad():
            unaugmented = reference(torch.stack([plain(load_image(p)) for p in paths]).double())
        assert _expected_kd_terms(descriptors.detach(), unaugmented, batch)["soft"] != pytest.approx(
            output.terms["soft"], rel=1e-3
        )


@pytest.mark.parametrize(
    "student_input, teacher, teacher_size",
    [("rgb", "seg", None), ("seg", "rgb", None), ("rgb", "rgb", [96, 96]), ("rgb", "rgb", None)],
    ids=["seg-teacher", "rgb-teacher-of-a-seg-student", "teacher-at-another-size", "same-inputs"],
)
def test_only_a_teacher_that_reads_the_students_inputs_is_rerun_on_augmented_batches(
    synth_tiny, rgb_teacher, seg_teacher, student_input, teacher, teacher_size
):
    run = {"rgb": rgb_teacher, "seg": seg_teacher}[teacher]
    spec = {"run": str(run), "input": teacher, "loss": {"name": "structural"}}
    if teacher_size:
        spec["image_size"] = teacher_size
    config = tiny_config(synth_tiny, [_method_override(spec)], **{"data.augment": "true", "data.input": student_input})
    (slot,) = TrainingMethod(config, CPU).teachers
    # An augmented RGB batch is no input for a seg teacher, a seg batch none for an RGB teacher,
    # and a 64-px batch is not what a 96-px teacher was asked to see: all three read their cache.
    assert slot.use_cache is (student_input != teacher or teacher_size is not None)


def test_bad_teacher_specs_and_teacher_mining_without_a_teacher_are_clear_errors(synth_tiny, rgb_teacher):
    def method_of(*overrides):
        return TrainingMethod(tiny_config(synth_tiny, list(overrides)), CPU)

    with pytest.raises(ValueError, match=r"method.teachers\[0\]: unknown key\(s\) inputs"):
        method_of(_method_override({"run": str(rgb_teacher), "inputs": "seg"}))
    with pytest.raises(ValueError, match=r"method.teachers\[0\]: missing 'run'"):
        method_of(_method_override({"input": "rgb"}))
    with pytest.raises(ValueError, match=r"method.teachers\[1\]: expected a mapping"):
        method_of(_method_override(_rgb(rgb_teacher), str(rgb_teacher)))
    with pytest.raises(ValueError, match="non-empty 'teachers' list"):
        method_of("method={name: distill, teachers: " + str(rgb_teacher) + "}")
    with pytest.raises(ValueError, match="mining.cache_model: teacher .* needs method.name: distill"):
        method_of("mining.cache_model=teacher")


# 2. The teacher descriptor cache.


def _small_image_set(synth_tiny: Path, folder: Path) -> PlaceDataset:
    """3 queries and 6 database images copied from the tiny split, so they can be rewritten."""
    source = open_dataset(synth_tiny, split="train")
    folder.mkdir()

    def copy_files(paths, prefix):
        copies = []
        for index, path in enumerate(paths):
            target = folder / f"{prefix}{index}{Path(path).suffix}"
            shutil.copy2(path, target)
            copies.append(target)
        return copies

    return PlaceDataset(
        name="copy",
        root=str(folder),
        split="train",
        query_paths=copy_files(source.query_paths[:3], "q"),
        database_paths=copy_files(source.database_paths[:6], "db"),
        query_utm=source.query_utm[:3],
        database_utm=source.database_utm[:6],
    )


class _CountingTeacher:
    """A frozen teacher whose network counts the images it runs on (a forward hook, no change to the model)."""

    def __init__(self, run: Path, cache_dir: Path) -> None:
        self.teacher = FrozenTeacher(run, "rgb", (IMAGE_SIZE, IMAGE_SIZE), CPU, cache_dir=cache_dir, progress=False)
        self.images = 0
        self.teacher.model.register_forward_hook(self._count)

    def _count(self, module, inputs, output) -> None:
        self.images += int(inputs[0].shape[0])

    def describe(self, dataset: PlaceDataset) -> tuple[torch.Tensor, torch.Tensor]:
        return self.teacher.cached_descriptors(dataset)


def _reference_descriptors(run: Path, paths) -> torch.Tensor:
    """A fresh float64 copy of the teacher on the plainly transformed images: (N, D)."""
    transform = build_transform((IMAGE_SIZE, IMAGE_SIZE))
    with torch.no_grad():
        return load_model(run).double()(torch.stack([transform(load_image(p)) for p in paths]).double())


def test_teacher_cache_is_reused_until_the_weights_or_the_images_change(synth_tiny, rgb_teacher, tmp_path):
    cache_dir = tmp_path / "cache"
    dataset = _small_image_set(synth_tiny, tmp_path / "images")
    total = dataset.num_queries + dataset.num_database
    run = tmp_path / "teacher"
    shutil.copytree(rgb_teacher, run)

    def cache_files() -> list[Path]:
        return sorted((cache_dir / "teacher_descriptors").glob("*.safetensors"))

    first = _CountingTeacher(run, cache_dir)
    queries, database = first.describe(dataset)
    assert first.images == total and len(cache_files()) == 1
    assert queries.shape == (3, 512) and database.shape == (6, 512)
    assert torch.allclose(queries.double(), _reference_descriptors(run, dataset.query_paths), atol=1e-5)
    assert torch.allclose(database.double(), _reference_descriptors(run, dataset.database_paths), atol=1e-5)

    # Reused: another run with the same teacher and images computes nothing.
    again = _CountingTeacher(run, cache_dir)
    cached_queries, cached_database = again.describe(dataset)
    assert again.images == 0
    assert torch.equal(cached_queries, queries) and torch.equal(cached_database, database)

    # The teacher's weights change (its run folder retrained in place): recomputed.
    # (Noise, not a rescaling: a ResNet with L2-normalised output ignores some rescalings.)
    model = load_model(run)
    torch.manual_seed(0)
    with torch.no_grad():
        weight = model.get_parameter(next(n for n, _ in model.named_parameters() if n.endswith("weight")))
        weight.add_(0.5 * weight.std() * torch.randn_like(weight))
    save_model(model, run / "best")
    retrained = _CountingTeacher(run, cache_dir)
    new_queries, _ = retrained.describe(dataset)
    assert retrained.images == total and len(cache_files()) == 2
    assert not torch.allclose(new_queries, queries, atol=1e-4)
    assert torch.allclose(new_queries.double(), _reference_descriptors(run, dataset.query_paths), atol=1e-5)

    # Only a BatchNorm statistic changes: a different function, so recomputed too.
    model = load_model(run)
    buffer = next(n for n, _ in model.named_buffers() if n.endswith("running_mean"))
    with torch.no_grad():
        model.get_buffer(buffer).add_(0.5)
    save_model(model, run / "best")
    rebuffered = _CountingTeacher(run, cache_dir)
    rebuffered.describe(dataset)
    assert rebuffered.images == total and len(cache_files()) == 3

    # The image set changes: another database subset...
    fewer = dataset.subset(database_indices=[5, 0, 2])
    subset_teacher = _CountingTeacher(run, cache_dir)
    _, sub_database = subset_teacher.describe(fewer)
    assert subset_teacher.images == 3 + 3 and len(cache_files()) == 4
    assert torch.allclose(sub_database.double(), _reference_descriptors(run, fewer.database_paths), atol=1e-5)

    # ... or one image rewritten in place (same name, another image's bytes): recomputed, only its row differs.
    _, before = _CountingTeacher(run, cache_dir).describe(dataset)
    path = Path(dataset.database_paths[1])
    shutil.copyfile(dataset.database_paths[4], path)
    rewritten = _CountingTeacher(run, cache_dir)
    _, after = rewritten.describe(dataset)
    assert rewritten.images == total
    changed_rows = [i for i in range(dataset.num_database) if not torch.allclose(after[i], before[i], atol=1e-6)]
    assert changed_rows == [1]
    assert torch.allclose(after[1], before[4], atol=1e-5)

    # ... or only touched (a new modification time): the cache cannot know the pixels are the same.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))
    touched = _CountingTeacher(run, cache_dir)
    touched.describe(dataset)
    assert touched.images == total


def test_a_damaged_teacher_cache_is_rebuilt(synth_tiny, rgb_teacher, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    dataset = _small_image_set(synth_tiny, tmp_path / "images")
    queries, database = _CountingTeacher(rgb_teacher, cache_dir).describe(dataset)
    (cache_file,) = (cache_dir / "teacher_descriptors").glob("*.safetensors")

    cache_file.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING):
        damaged = _CountingTeacher(rgb_teacher, cache_dir)
        rebuilt_queries, _ = damaged.describe(dataset)
    assert damaged.images == dataset.num_queries + dataset.num_database
    assert "unreadable" in caplog.text and torch.allclose(rebuilt_queries, queries)

    # A readable file whose rows do not match the images is no better than a damaged one.
    save_file({"queries": queries[:2].contiguous(), "database": database}, str(cache_file))
    wrong_rows = _CountingTeacher(rgb_teacher, cache_dir)
    rebuilt_queries, _ = wrong_rows.describe(dataset)
    assert wrong_rows.images == dataset.num_queries + dataset.num_database
    assert rebuilt_queries.shape == queries.shape


# 3. Several teachers: one name per teacher in the logged terms.


def test_two_teachers_log_distinct_terms_named_after_each_teacher(synth_tiny, rgb_teacher, seg_teacher, tmp_path):
    config = tiny_config(synth_tiny, [*FAST, _method_override(_rgb(rgb_teacher), _seg(seg_teacher))])
    result = loop.train(config, tmp_path / "run")
    (record,) = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    names = set(record["loss"])
    rgb_terms = {n.split("/", 1)[1] for n in names if n.startswith("rgb0/")}
    seg_terms = {n.split("/", 1)[1] for n in names if n.startswith("seg1/")}
    # Every term but the sum belongs to one teacher, and each teacher's own loss terms are there.
    assert names == {"total"} | {f"rgb0/{t}" for t in rgb_terms} | {f"seg1/{t}" for t in seg_terms}
    assert {"hard", "soft", "cross_metric", "total"} <= rgb_terms
    assert {"hard", "kl", "weighted_kl", "distillation", "total"} <= seg_terms
    assert record["loss"]["total"] == pytest.approx(record["loss"]["rgb0/total"] + record["loss"]["seg1/total"])
    assert record["loss"]["rgb0/soft"] > 0 and record["loss"]["seg1/kl"] > 0


def test_two_teachers_of_one_kind_get_their_own_terms(synth_tiny, rgb_teacher, rgb_teacher_b):
    no_hard = dict(RGB_LOSS, w_hard=0.0)
    teachers = (_rgb(rgb_teacher), {"run": str(rgb_teacher_b), "input": "rgb", "loss": no_hard})
    config = tiny_config(synth_tiny, [_method_override(*teachers)])
    dataset = open_dataset(synth_tiny, split="train")
    method = TrainingMethod(config, CPU)
    method.prepare(dataset)
    assert [slot.name for slot in method.teachers] == ["rgb0", "rgb1"]
    torch.manual_seed(0)
    batch = _hand_batch(dataset, config)
    student = _student()
    with torch.no_grad():
        descriptors = student(batch.images)
        output = method.loss(batch, split_tuple_descriptors(descriptors, batch))
    # Each prefixed term is that teacher's, checked against its own descriptors in float64.
    for prefix, run in (("rgb0", rgb_teacher), ("rgb1", rgb_teacher_b)):
        with torch.no_grad():
            expected = _expected_kd_terms(descriptors, load_model(run).double()(batch.images.double()), batch)
        for name in ("soft", "cross_metric"):
            assert output.terms[f"{prefix}/{name}"] == pytest.approx(expected[name], rel=1e-4), f"{prefix}/{name}"
    assert output.terms["rgb0/soft"] != pytest.approx(output.terms["rgb1/soft"], rel=1e-3)
    assert output.terms["total"] == pytest.approx(output.terms["rgb0/total"] + output.terms["rgb1/total"], rel=1e-6)
    assert not any(name in output.terms for name in ("soft", "cross_metric", "hard")), "un-prefixed teacher terms"


def _method_loss(synth_tiny, method: dict, batch=None):
    """The method's loss of one hand-made batch, and the method, for a ``method`` mapping."""
    config = tiny_config(synth_tiny, [{"method": method}])
    dataset = open_dataset(synth_tiny, split="train")
    built = TrainingMethod(config, CPU)
    built.prepare(dataset)
    torch.manual_seed(0)
    batch = _hand_batch(dataset, config) if batch is None else batch
    with torch.no_grad():
        student = split_tuple_descriptors(_student()(batch.images), batch)
        return built.loss(batch, student), built, batch, student


def test_per_teacher_w_hard_gives_the_same_total_as_the_method_level_triplet_term(
    synth_tiny, rgb_teacher, rgb_teacher_b
):
    old_b = dict(RGB_LOSS, w_hard=0.5, w_soft=0.3)
    old = {"name": "distill", "teachers": [_rgb(rgb_teacher), _rgb(rgb_teacher_b, loss=old_b)]}
    old_output, method, batch, student = _method_loss(synth_tiny, old)
    assert (method.w_hard, method.margin) == (1.5, 0.1)
    # The earlier semantics, independently: the sum of each teacher's full loss (its own triplet term included).
    teachers = [gather_cached_descriptors(slot.queries, slot.database, batch) for slot in method.teachers]
    expected = sum(float(slot.loss(student, t).total) for slot, t in zip(method.teachers, teachers))
    assert old_output.terms["total"] == pytest.approx(expected, rel=1e-6)

    new_losses = [{k: v for k, v in loss.items() if k != "w_hard"} for loss in (RGB_LOSS, old_b)]
    new = {
        "name": "distill",
        "w_hard": 1.5,
        "margin": 0.1,
        "teachers": [_rgb(rgb_teacher, loss=new_losses[0]), _rgb(rgb_teacher_b, loss=new_losses[1])],
    }
    new_output, _, _, _ = _method_loss(synth_tiny, new, batch)
    assert new_output.terms["total"] == pytest.approx(old_output.terms["total"], rel=1e-6)
    assert float(new_output.total) == pytest.approx(float(old_output.total), rel=1e-6)
    # The triplet term is counted once, at w_hard: total = 1.5·hard + Σ teacher terms.
    hard = old_output.terms["rgb0/hard"]
    kd = [old_output.terms[f"{p}/soft"] * w_soft + old_output.terms[f"{p}/cross_metric"] for p, w_soft in
          (("rgb0", 1.0), ("rgb1", 0.3))]  # fmt: skip
    assert old_output.terms["total"] == pytest.approx(1.5 * hard + sum(kd), rel=1e-5)

    # A teacher's weight scales its teacher term alone.
    weighted = dict(new, teachers=[dict(new["teachers"][0], weight=2.0), new["teachers"][1]])
    weighted_output, _, _, _ = _method_loss(synth_tiny, weighted, batch)
    assert weighted_output.terms["total"] == pytest.approx(1.5 * hard + 2 * kd[0] + kd[1], rel=1e-5)


def test_method_triplet_term_refuses_two_forms_and_disagreeing_margins(synth_tiny, rgb_teacher, rgb_teacher_b):
    both = {"name": "distill", "w_hard": 1.0, "teachers": [_rgb(rgb_teacher)]}
    with pytest.raises(ValueError, match=r"method\.teachers\[0\]\.loss\.w_hard: .*method\.w_hard"):
        _method_loss(synth_tiny, both)
    margins = [dict(RGB_LOSS, margin=0.1), dict(RGB_LOSS, margin=0.2)]
    mixed = {"name": "distill", "teachers": [_rgb(rgb_teacher, loss=margins[0]), _rgb(rgb_teacher_b, loss=margins[1])]}
    with pytest.raises(ValueError, match=r"different margins \[0\.1, 0\.2\].*method\.w_hard and method\.margin"):
        _method_loss(synth_tiny, mixed)
    # Margins of teachers without a triplet term (w_hard: 0) do not matter.
    margins[1] = dict(margins[1], w_hard=0.0)
    _, method, _, _ = _method_loss(synth_tiny, dict(mixed, teachers=[_rgb(rgb_teacher, loss=margins[0]),
                                                                    _rgb(rgb_teacher_b, loss=margins[1])]))  # fmt: skip
    assert (method.w_hard, method.margin) == (1.0, 0.1)
    # w_hard: 0 in a teacher's loss agrees with the method-level form.
    zero = {"name": "distill", "w_hard": 2.0, "teachers": [_rgb(rgb_teacher, loss=dict(RGB_LOSS, w_hard=0.0))]}
    assert _method_loss(synth_tiny, zero)[1].w_hard == 2.0
    with pytest.raises(ValueError, match=r"method\.teachers\[0\]\.weight: expected a number >= 0"):
        _method_loss(synth_tiny, {"name": "distill", "teachers": [_rgb(rgb_teacher, weight=-1)]})


# 4. Mining with the teacher's descriptors.


def _recording_miners(calls: list[dict]):
    """``miner_from_config`` giving the real miner, whose ``mine`` also keeps what it received and returned."""

    def build(mining, dataset):
        miner = miner_from_config(mining, dataset)
        real_mine = miner.mine

        def mine(query_indices, query_descriptors, database_descriptors, rng):
            record = {
                "dataset": dataset,
                "indices": np.array(query_indices),
                "queries": query_descriptors.copy(),
                "database": database_descriptors.copy(),
                "rng": copy.deepcopy(rng),
            }
            tuples, stats = real_mine(query_indices, query_descriptors, database_descriptors, rng)
            calls.append({**record, "tuples": tuples})
            return tuples, stats

        miner.mine = mine
        return miner

    return build


def _as_lists(tuples) -> list:
    return [(t.query, t.positive, t.negatives.tolist()) for t in tuples]


@pytest.mark.parametrize(
    "cache_model, augment",
    [("teacher", False), ("teacher", True), ("student", False)],
    ids=["teacher", "teacher-with-augmentation", "student-control"],
)
def test_teacher_mining_mines_the_teachers_descriptors(
    synth_tiny, rgb_teacher, tmp_path, monkeypatch, cache_model, augment
):
    calls: list[dict] = []
    monkeypatch.setattr(loop, "miner_from_config", _recording_miners(calls))
    config = tiny_config(
        synth_tiny,
        [*FAST, _method_override(_rgb(rgb_teacher))],
        **{"mining.cache_model": cache_model, "data.augment": str(augment).lower()},
    )
    loop.train(config, tmp_path / "run")
    (call,) = calls
    dataset = call["dataset"]
    # The teacher's descriptors of the (un-augmented) training split, computed here from its checkpoint.
    query_paths, database_paths = input_paths(dataset, "rgb")
    teacher = load_model(rgb_teacher)
    teacher_queries = compute_descriptors(teacher, query_paths, (IMAGE_SIZE, IMAGE_SIZE), progress=False)
    teacher_database = compute_descriptors(teacher, database_paths, (IMAGE_SIZE, IMAGE_SIZE), progress=False)
    indices = call["indices"]
    uses_teacher = np.allclose(call["database"], teacher_database, atol=1e-5) and np.allclose(
        call["queries"][indices], teacher_queries[indices], atol=1e-5
    )
    assert uses_teacher is (cache_model == "teacher")
    # Mined again from the teacher's descriptors by a fresh miner with the same settings and draws.
    by_hand, _ = miner_from_config(config.mining, dataset).mine(
        indices, teacher_queries, teacher_database, copy.deepcopy(call["rng"])
    )
    assert by_hand, "the teacher leaves margin violations to mine"
    if cache_model == "teacher":
        assert _as_lists(call["tuples"]) == _as_lists(by_hand)
    else:
        # The student's (freshly initialised) descriptors pick other positives or negatives.
        assert _as_lists(call["tuples"]) != _as_lists(by_hand)


# 5. Interrupted and resumed distillation.


class _Interrupt(Exception):
    pass


def test_an_interrupted_distillation_resumes_to_the_weights_of_an_uninterrupted_run(
    synth_tiny, rgb_teacher, seg_teacher, tmp_path
):
    # Both teachers, the RGB one re-run on augmented batches and the seg one from its cache,
    # tuples mined with the RGB teacher: every teacher path the loop has.
    config = tiny_config(
        synth_tiny,
        [*FAST, _method_override(_rgb(rgb_teacher), _seg(seg_teacher))],
        epochs=2,
        **{"data.augment": "true", "mining.cache_model": "teacher"},
    )
    teachers_before = {run: _file_digests(run) for run in (rgb_teacher, seg_teacher)}
    full = loop.train(config, tmp_path / "full")

    def interrupt_in_epoch_2(info):
        if info.epoch == 2 and info.step == 1:
            raise _Interrupt()

    with pytest.raises(_Interrupt):
        loop.train(config, tmp_path / "interrupted", step_callbacks=[interrupt_in_epoch_2])
    resumed = loop.train(config, tmp_path / "interrupted", resume=True)
    assert resumed.epochs_run == 2
    a = load_file(str(full.run_dir / "last.safetensors"))
    b = load_file(str(resumed.run_dir / "last.safetensors"))
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f"resumed weights differ from the uninterrupted run's: {different[:3]}"
    full_metrics = [json.loads(line) for line in (full.run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed_metrics = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in resumed_metrics] == [1, 2]
    assert [m["loss"] for m in resumed_metrics] == [m["loss"] for m in full_metrics]
    assert {"rgb0/soft", "seg1/kl"} <= set(full_metrics[1]["loss"]) and full_metrics[1]["steps"] > 0
    # Neither teacher's checkpoint was touched by three training runs.
    assert {run: _file_digests(run) for run in (rgb_teacher, seg_teacher)} == teachers_before
