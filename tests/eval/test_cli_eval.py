"""``vprdistill eval`` end to end on the tiny dataset: table, JSON, predictions CSV, descriptors, pictures."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.data.netvlad_files import make_two_sets
from vprdistill.cli.main import main
from vprdistill.models.checkpoint import save_model
from vprdistill.models.registry import build_model


def test_eval_writes_every_output(tiny_places, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([
        "eval", "--model", "resnet18-gem", "--dataset", str(tiny_places), "--image-size", "40",
        "--recalls", "1", "5", "--batch-size", "4", "--device", "cpu", "--no-progress",
        "--json", str(out / "report.json"), "--save-predictions", str(out / "predictions.csv"),
        "--save-descriptors", str(out / "descriptors"), "--save-pictures", "2",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "R@1" in printed and "night" in printed and "ms/image" in printed

    report = json.loads((out / "report.json").read_text())
    for key in (
        "recall",
        "num_queries",
        "num_queries_without_positive",
        "num_database",
        "threshold_m",
        "descriptor_dim",
        "ms_per_image",
        "ms_per_query",
        "recall_per_condition",
        "model",
        "settings",
    ):
        assert key in report, key
    assert set(report["recall"]) == {"1", "5"}
    assert report["settings"]["image_size"] == [40, 40]

    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["query", "prediction_1", "prediction_2", "prediction_3", "prediction_4", "prediction_5"]
    assert len(rows) == 1 + report["num_queries"]
    assert all(len(row) == 6 for row in rows[1:])
    assert all(row[0].endswith(".jpg") and "queries" in row[0] for row in rows[1:])

    database = np.load(out / "descriptors" / "database.npy")
    queries = np.load(out / "descriptors" / "queries.npy")
    paths = json.loads((out / "descriptors" / "paths.json").read_text())
    assert database.dtype == queries.dtype == np.float32
    assert database.shape == (len(paths["database"]), 512) and queries.shape == (len(paths["queries"]), 512)
    # The CSV's first prediction is the database image whose saved descriptor scores highest.
    best = np.argmax(queries @ database.T, axis=1)
    assert [row[1] for row in rows[1:]] == [paths["database"][i] for i in best]

    pictures = sorted((out / "report_pictures").glob("*.png"))
    assert len(pictures) == 2


def test_eval_of_a_checkpoint_uses_the_run_image_size(tiny_places, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    save_model(build_model("structvpr-rgb-tiny"), run / "best")
    (run / "config.yaml").write_text("data:\n  image_size: [32, 48]\n")
    assert main(["eval", "--model", str(run), "--dataset", str(tiny_places), "--no-progress",
                 "--json", str(tmp_path / "r.json"), "--threshold", "10"]) == 0  # fmt: skip
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["image_size"] == [32, 48]
    assert report["threshold_m"] == 10.0


def test_eval_names_a_bad_model(tiny_places, capsys):
    assert main(["eval", "--model", "no-such-model", "--dataset", str(tiny_places)]) == 1
    assert "no-such-model" in capsys.readouterr().err


def test_eval_with_patch_rerank_reports_recall_before_and_after(tiny_places, tmp_path, capsys):
    report_path = tmp_path / "rerank.json"
    code = main([
        "eval", "--model", "resnet18-gem", "--dataset", str(tiny_places), "--image-size", "64",
        "--recalls", "1", "5", "--device", "cpu", "--no-progress", "--rerank", "patch", "--rerank-topk", "5",
        "--json", str(report_path),
    ])  # fmt: skip
    assert code == 0
    report = json.loads(report_path.read_text())
    assert set(report["recall_before_rerank"]) == {"1", "5"}
    assert report["rerank"]["kind"] == "patch" and report["rerank"]["topk"] == 5
    assert report["rerank"]["ms_per_query"] > 0
    # Re-ranking only reorders the top 5, so R@5 cannot change.
    assert report["recall"]["5"] == report["recall_before_rerank"]["5"]
    assert "re-ranking: patch" in capsys.readouterr().out


def test_eval_refuses_rerank_for_a_segmentation_model(tiny_places, tmp_path, capsys):
    code = main(["eval", "--model", "structvpr-seg-tiny", "--dataset", str(tiny_places), "--image-size", "32",
                 "--device", "cpu", "--no-progress", "--rerank", "patch"])  # fmt: skip
    assert code == 1
    assert "segmentation maps" in capsys.readouterr().err


def test_eval_queries_without_positive_convention(tiny_places, tmp_path, capsys):
    """5 of the 6 queries have a positive: every R@N counted over 6 is 5/6 of the same R@N over 5."""
    reports = {}
    for convention in ("count-as-miss", "exclude"):
        path = tmp_path / f"{convention}.json"
        args = ["eval", "--model", "resnet18-gem", "--dataset", str(tiny_places), "--image-size", "40",
                "--recalls", "1", "5", "--device", "cpu", "--no-progress", "--json", str(path)]  # fmt: skip
        if convention == "exclude":
            args += ["--queries-without-positive", "exclude"]
        assert main(args) == 0
        reports[convention] = json.loads(path.read_text())
        printed = capsys.readouterr().out
        treatment = "counted as misses" if convention == "count-as-miss" else "left out"
        assert f"1 without a positive within 25 m, {treatment}" in printed
        assert f"read from {tiny_places / 'images' / 'test'}" in printed
    assert reports["count-as-miss"]["queries_without_positive"] == {"convention": "count-as-miss", "count": 1}
    assert reports["exclude"]["queries_without_positive"] == {"convention": "exclude", "count": 1}
    assert reports["exclude"]["source"] == {"format": "folder", "path": str(tiny_places / "images" / "test"),
                                            "which_set": None}  # fmt: skip
    for n in ("1", "5"):
        assert reports["count-as-miss"]["recall"][n] * 6 == pytest.approx(reports["exclude"]["recall"][n] * 5)
    assert reports["exclude"]["recall"]["5"] > 0  # the relation above is not 0 == 0


def test_eval_of_a_netvlad_root_with_two_sets(tmp_path, capsys):
    root = make_two_sets(tmp_path / "Pittsburgh")
    report_path = tmp_path / "val.json"
    assert main(["eval", "--model", "resnet18-gem", "--dataset", str(root), "--dataset-name", "pitts250k",
                 "--split", "val", "--image-size", "32", "--recalls", "1", "--device", "cpu", "--no-progress",
                 "--json", str(report_path)]) == 0  # fmt: skip
    report = json.loads(report_path.read_text())
    val_file = root / "datasets" / "pitts250k_val.mat"
    assert report["source"] == {"format": "mat", "path": str(val_file), "which_set": "val"}
    assert (report["dataset"], report["split"], report["num_database"], report["num_queries"]) == (
        "pitts250k", "val", 2, 2)  # fmt: skip
    assert f"read from {val_file} (whichSet 'val')" in capsys.readouterr().out

    # Without a name the root is ambiguous; a file without --split opens as it is.
    assert main(["eval", "--model", "resnet18-gem", "--dataset", str(root), "--split", "val"]) == 1
    assert "choose one by dataset name (pitts250k, pitts30k)" in capsys.readouterr().err
    assert main(["eval", "--model", "resnet18-gem", "--dataset", str(val_file), "--image-size", "32",
                 "--recalls", "1", "--device", "cpu", "--no-progress", "--json", str(report_path)]) == 0  # fmt: skip
    assert json.loads(report_path.read_text())["split"] == "val"
