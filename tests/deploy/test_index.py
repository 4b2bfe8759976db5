"""Map index: build/load round trip, model checks, `index add`, atomic replacement, compact storage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.deploy.helpers import SPACING_M, pattern_image, place_name
from vprdistill.cli.main import main
from vprdistill.data.readers import open_dataset
from vprdistill.deploy.index import IndexModelMismatchError, MapIndex, load_store, save_store, storage_kind
from vprdistill.eval.extract import compute_descriptors
from vprdistill.models.checkpoint import load_model, model_fingerprint
from vprdistill.models.registry import build_model
from vprdistill.retrieval.approximate import build_index, empty_like


def test_build_and_load_round_trip(tiny_index: Path, tiny_dataset: Path, tiny_model_stem: Path) -> None:
    model = load_model(tiny_model_stem)
    dataset = open_dataset(tiny_dataset, "test")
    manifest = json.loads((tiny_index / "index.json").read_text())
    assert manifest["model_fingerprint"] == model_fingerprint(model)
    assert manifest["descriptor_dim"] == model.descriptor_dim == 512
    assert manifest["count"] == dataset.num_database == 12
    assert manifest["type"] == "flat" and manifest["dtype"] == "float32" and manifest["pca"] is None
    assert manifest["image_size"] == [64, 64]
    assert manifest["model_config"] == model.config
    assert sorted(p.name for p in tiny_index.iterdir()) == [
        "descriptors.npy",
        "index.json",
        "paths.json",
        "positions.npy",
    ]

    index = MapIndex.load(tiny_index, model=model)
    np.testing.assert_array_equal(index.positions, dataset.database_utm)
    assert [Path(p).name for p in index.paths] == [p.name for p in dataset.database_paths]
    # Searching with a database image's own descriptor finds that image first, with score 1.
    descriptors = compute_descriptors(model, dataset.database_paths[:3], (64, 64), progress=False)
    scores, indices = index.search(descriptors, 2)
    np.testing.assert_array_equal(indices[:, 0], [0, 1, 2])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_other_weights_are_refused_naming_both_fingerprints(tiny_index: Path) -> None:
    index = MapIndex.load(tiny_index)
    torch.manual_seed(123)
    other = build_model("resnet18-gem")
    with pytest.raises(IndexModelMismatchError) as error:
        MapIndex.load(tiny_index, model=other)
    assert model_fingerprint(other) in str(error.value) and index.model_fingerprint in str(error.value)


def test_other_descriptor_size_is_refused_naming_both(tiny_index: Path) -> None:
    other = build_model({"preset": "resnet18-gem", "descriptor_dim": 128})
    with pytest.raises(IndexModelMismatchError, match=r"128-d.*512-d"):
        MapIndex.load(tiny_index, model=other)


def test_index_add_grows_the_index(tiny_index: Path, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(tiny_index, index_dir)
    new_dir = tmp_path / "new_places"
    new_dir.mkdir()
    rng = np.random.default_rng(7)
    east = 1000.0 + SPACING_M * 20
    Image.fromarray(pattern_image(rng)).save(new_dir / place_name(east, 5000.0))
    Image.fromarray(pattern_image(rng)).save(new_dir / "no_position.jpg")
    assert main(["index", "add", str(index_dir), str(new_dir), "--no-progress", "--device", "cpu"]) == 0

    index = MapIndex.load(index_dir)
    assert len(index) == 14 and json.loads((index_dir / "index.json").read_text())["count"] == 14
    assert np.isnan(index.positions[-1]).all()
    assert index.positions[-2].tolist() == [east, 5000.0]
    model = load_model(index.manifest["model_path"])
    descriptor = compute_descriptors(model, [new_dir / place_name(east, 5000.0)], (64, 64), progress=False)
    _, indices = index.search(descriptor, 1)
    assert indices[0, 0] == 12
    assert not list(tmp_path.glob(".index.*")), "no staging folder may be left behind"


def test_failed_build_leaves_the_previous_index_intact(tiny_index: Path, tiny_model_stem: Path, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(tiny_index, index_dir)
    before = {p.name: p.read_bytes() for p in index_dir.iterdir()}
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(pattern_image(np.random.default_rng(0))).save(images / place_name(0.0, 0.0))
    (images / place_name(50.0, 0.0)).write_bytes(b"not a jpeg at all")
    code = main(["index", "build", "--model", str(tiny_model_stem), "--images", str(images),
                 "--out", str(index_dir), "--image-size", "64", "--no-progress"])  # fmt: skip
    assert code == 1
    assert {p.name: p.read_bytes() for p in index_dir.iterdir()} == before
    assert len(MapIndex.load(index_dir)) == 12


def test_failure_while_writing_leaves_the_previous_index_intact(
    tiny_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(tiny_index, index_dir)
    before = {p.name: p.read_bytes() for p in index_dir.iterdir()}
    index = MapIndex.load(index_dir)
    index.add(np.eye(1, 512, dtype=np.float32), np.zeros((1, 2)), ["extra.jpg"])

    import vprdistill.deploy.index as index_module

    real_write = index_module.atomic_write_json

    def fail_on_manifest(path, obj):  # the disk fills up just before the manifest
        if Path(path).name == "index.json":
            raise OSError("No space left on device")
        real_write(path, obj)

    monkeypatch.setattr(index_module, "atomic_write_json", fail_on_manifest)
    with pytest.raises(OSError, match="No space"):
        index.save(index_dir)
    assert {p.name: p.read_bytes() for p in index_dir.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_refuses_to_replace_a_folder_that_is_not_an_index(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    index = MapIndex(build_index(np.eye(3, 8, dtype=np.float32)), np.zeros((3, 2)), ["a", "b", "c"],
                     {"descriptor_dim": 8})  # fmt: skip
    with pytest.raises(FileExistsError, match="index.json"):
        index.save(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("index_type", "dtype", "pca", "stored_file"),
    [
        ("flat", "float16", None, "descriptors.npy"),
        ("flat", "int8", 8, "descriptors.faiss"),
        ("hnsw", "float32", 8, "descriptors.faiss"),
    ],
)
def test_compact_indexes_round_trip_and_find_copies(
    tiny_dataset: Path,
    tiny_model_stem: Path,
    tmp_path: Path,
    index_type: str,
    dtype: str,
    pca: int | None,
    stored_file: str,
) -> None:
    out = tmp_path / "index"
    args = ["index", "build", "--model", str(tiny_model_stem), "--dataset", str(tiny_dataset), "--split", "test",
            "--out", str(out), "--image-size", "64", "--no-progress", "--type", index_type, "--dtype", dtype]  # fmt: skip
    assert main(args + (["--pca", str(pca)] if pca else [])) == 0
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["stored_dim"] == (pca or 512) and manifest["dtype"] == dtype and manifest["type"] == index_type
    assert (out / stored_file).is_file() and (out / "pca_matrix.npy").is_file() == bool(pca)
    # float16, int8 + PCA-8 and HNSW + PCA-8 keep nearly every exact neighbour of these descriptors
    # (1.0, 0.99 and 1.0 measured); a broken compression or search falls far below.
    assert manifest["neighbour_recall_at_10"] >= 0.9
    if dtype == "float16":
        assert np.load(out / "descriptors.npy").dtype == np.float16

    model = load_model(tiny_model_stem)
    dataset = open_dataset(tiny_dataset, "test")
    index = MapIndex.load(out, model=model)
    queries = compute_descriptors(model, dataset.query_paths, (64, 64), progress=False)
    _, indices = index.search(queries, 1)
    # Queries are near-copies of database rows 1, 4, 7, 10.
    np.testing.assert_array_equal(indices[:, 0], [1, 4, 7, 10])


def test_build_with_images_folder_reads_positions_and_allows_unknown(tiny_model_stem: Path, tmp_path: Path) -> None:
    images = tmp_path / "photos"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    Image.fromarray(pattern_image(rng)).save(images / place_name(10.0, 20.0))
    Image.fromarray(pattern_image(rng)).save(images / "sub" / "IMG_0001.jpg")
    out = tmp_path / "index"
    assert main(["index", "build", "--model", str(tiny_model_stem), "--images", str(images), "--out", str(out),
                 "--image-size", "32", "--no-progress"]) == 0  # fmt: skip
    index = MapIndex.load(out)
    assert index.positions[0].tolist() == [10.0, 20.0] and np.isnan(index.positions[1]).all()
    assert index.image_size == (32, 32)


@pytest.mark.parametrize(
    ("index_type", "dtype", "pca"), [("ivfpq", "float32", None), ("ivfpq", "float32", 32), ("flat", "int8", None)]
)
def test_trained_stores_survive_save_load_and_empty_like(
    tmp_path: Path, index_type: str, dtype: str, pca: int | None
) -> None:
    from benchmarks._search_helpers import structured_descriptors

    database, queries = structured_descriptors(np.random.default_rng(0), 3000, 20, 64, latent_dim=32)
    store = build_index(database, storage_kind(index_type, dtype), pca_dim=pca, normalise=True)
    save_store(store, tmp_path, index_type, dtype)
    loaded = load_store(tmp_path, index_type, dtype, 64, pca or 64, pca is not None)
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], store.search(queries, 5)[1])
    # empty_like keeps the trained quantiser: entries added later are found as themselves.
    empty = empty_like(store)
    assert empty.ntotal == 0
    empty.add(database[:50])
    assert empty.search(database[:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_sharded_build_matches_a_plain_build_and_reuses_finished_shards(
    tiny_index: Path, tiny_dataset: Path, tiny_model_stem: Path, tmp_path: Path
) -> None:
    shards = tmp_path / "shards"
    out = tmp_path / "sharded_index"
    args = [
        "index",
        "build",
        "--model",
        str(tiny_model_stem),
        "--dataset",
        str(tiny_dataset),
        "--split",
        "test",
        "--out",
        str(out),
        "--shards",
        str(shards),
        "--shard-size",
        "5",
        "--image-size",
        "64",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    shard_files = sorted(shards.glob("shard_*.npy"))
    assert len(shard_files) == 3  # 12 images in shards of 5
    stamps = {p.name: p.stat().st_mtime_ns for p in shard_files}
    np.testing.assert_allclose(np.load(out / "descriptors.npy"), np.load(tiny_index / "descriptors.npy"), atol=1e-5)
    # A second build reads the finished shards back instead of recomputing them.
    assert main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in sorted(shards.glob("shard_*.npy"))} == stamps


def test_folder_in_the_first_format_loads_and_searches_as_numpy(tmp_path: Path) -> None:
    """A PCA-reduced flat float32 folder laid out by hand as the first version wrote it (no checksums)."""
    rng = np.random.default_rng(5)
    unit = lambda rows: (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    matrix, bias = rng.standard_normal((4, 10)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    database = unit(rng.standard_normal((30, 10)))
    np.save(tmp_path / "descriptors.npy", unit(database @ matrix.T + bias))
    np.save(tmp_path / "pca_matrix.npy", matrix)
    np.save(tmp_path / "pca_bias.npy", bias)
    np.save(tmp_path / "positions.npy", np.arange(60, dtype=np.float64).reshape(30, 2))
    (tmp_path / "paths.json").write_text(json.dumps([f"{i}.jpg" for i in range(30)]))
    manifest = {"format_version": 1, "model_fingerprint": "f", "model_config": {}, "descriptor_dim": 10,
                "stored_dim": 4, "type": "flat", "pca": 4, "dtype": "float32", "count": 30, "image_size": [8, 8]}  # fmt: skip
    (tmp_path / "index.json").write_text(json.dumps(manifest))
    index = MapIndex.load(tmp_path)
    queries = unit(rng.standard_normal((6, 10)))
    scores, indices = index.search(queries, 3)
    expected = unit(queries @ matrix.T + bias) @ unit(database @ matrix.T + bias).T
    np.testing.assert_array_equal(indices, np.argsort(-expected, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(scores, np.sort(expected, axis=1)[:, ::-1][:, :3], atol=1e-5)
    assert index.positions[29].tolist() == [58.0, 59.0] and index.paths[0] == "0.jpg"
