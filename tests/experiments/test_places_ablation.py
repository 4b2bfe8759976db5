"""benchmarks/places_ablation.py on a `demo --quick` folder: reuses the demo's run, trains the other seeds' runs.

The folder holds only what the StructVPR study reads (the dataset, the segmenter's predicted maps, the
seg-branch and the weighted RGB student), built by the demo's own stages, so the test stays short.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from benchmarks import places_ablation
from benchmarks.report_sections import REPO_ROOT
from vprdistill.data.readers import open_dataset
from vprdistill.experiments import demo
from vprdistill.train.config import load_config
from vprdistill.train.loop import train


def _quick_demo_subset(out: Path) -> None:
    """The demo's quick budget, its data, segmenter and maps, and its `structvpr-seg` and `structvpr-rgb` runs."""
    from vprdistill.data.synth import generate

    budget, seed = demo.QUICK, 0
    dataset = out / "data" / f"synthcity-{budget.synth_preset}"
    generate(
        dataset, preset=budget.synth_preset, seed=seed, image_size=budget.dataset_image_size,
        train_places=budget.train_places, views_per_place=budget.views_per_place, progress=False, **budget.synth,
    )  # fmt: skip
    segmenter = out / demo.SEGMENTER_FOLDER
    demo._train_segmenter(dataset, segmenter, budget, seed, "cpu")
    demo._write_predicted_maps(dataset, segmenter, budget, "cpu")
    models = {model.key: model for model in demo.DEMO_MODELS}
    for key in (demo.SEG_BRANCH_KEY, "structvpr-rgb"):
        model = models[key]
        overrides = demo._overrides(model, budget, dataset, out / "runs", seed) + ["device=cpu", "progress=false"]
        train(load_config(model.preset, overrides), out / "runs" / key)


def _teacher_weighting(config: dict) -> str | None:
    teachers = (config.get("method") or {}).get("teachers") or []
    return teachers[0]["loss"]["weighting"]["name"] if teachers else None


def test_structvpr_study_reuses_the_demo_run_and_trains_the_other_seeds(tmp_path):
    out, work = tmp_path / "demo", tmp_path / "work"
    _quick_demo_subset(out)
    demo_run = out / "runs" / "structvpr-rgb"
    mtimes = {p.name: p.stat().st_mtime_ns for p in demo_run.iterdir() if p.is_file()}
    results_md = REPO_ROOT / "RESULTS.md"
    results_before = results_md.read_bytes() if results_md.exists() else None

    record = places_ablation.main(
        ["--demo", str(out), "--study", "structvpr", "--seeds", "0", "1", "--work", str(work), "--threads", "1",
         "--no-write"]
    )  # fmt: skip

    # --no-write leaves RESULTS.md as it was.
    assert (results_md.read_bytes() if results_md.exists() else None) == results_before
    rows = {(row["variant"], row["seed"]): row for row in record["rows"]}
    assert sorted(rows) == [(v, s) for v in ("alone", "partition", "uniform") for s in (0, 1)]
    # The seed-0 partition row is the demo's run, read as it is: nothing in its folder was rewritten.
    assert rows[("partition", 0)]["reused"] and Path(rows[("partition", 0)]["run_dir"]) == demo_run
    assert {p.name: p.stat().st_mtime_ns for p in demo_run.iterdir() if p.is_file()} == mtimes
    # Every other row was trained under WORK with the labelled teacher weighting and its own seed.
    partition = yaml.safe_load((demo_run / "config.yaml").read_text())
    expected = {"alone": None, "uniform": "uniform", "partition": "partition"}
    for (variant, seed), row in rows.items():
        if (variant, seed) == ("partition", 0):
            continue
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == work and (run_dir / "best.safetensors").is_file()
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["seed"] == seed
        assert _teacher_weighting(config) == expected[variant]
        if variant == "alone":
            assert config["method"] == {"name": "triplet"}
        # Apart from the seed, the run differs from the demo's partition run in its method only.
        same = {k: v for k, v in config.items() if k not in ("seed", "method")}
        assert same == {k: v for k, v in partition.items() if k not in ("seed", "method")}
        if variant != "alone":
            assert config["method"]["teachers"][0]["run"] == partition["method"]["teachers"][0]["run"]

    # Every row's hits cover the test split's queries, and its R@1 is their share.
    test_set = open_dataset(out / "data" / "synthcity-tiny", split="test", segmentation_dir=demo.PREDICTED_MAPS_DIR)
    for row in [*record["rows"], *record["baselines"]]:
        assert len(row["hits"]["1"]) == test_set.num_queries == record["num_queries"]
        assert 100 * sum(row["hits"]["1"]) / test_set.num_queries == pytest.approx(row["recall"]["1"])
    # The over-seeds mean is the arithmetic mean of the per-seed R@1.
    for variant in ("alone", "uniform", "partition"):
        per_seed = [rows[(variant, s)]["recall"]["1"] for s in (0, 1)]
        summary = record["variants"][variant]
        assert summary["mean"] == pytest.approx(sum(per_seed) / 2)
        assert summary["seeds"] == 2
        if per_seed[0] != per_seed[1]:
            assert summary["low"] < summary["mean"] < summary["high"]
    # The paired differences: partition − uniform of each seed, from the same queries' hits.
    claim = next(c for c in record["comparisons"] if (c["better"], c["worse"]) == ("partition", "uniform"))
    for entry in claim["per_seed"]:
        a, b = rows[("partition", entry["seed"])]["hits"]["1"], rows[("uniform", entry["seed"])]["hits"]["1"]
        assert entry["difference"] == pytest.approx(100 * (sum(a) - sum(b)) / len(a))
    assert claim["mean"] == pytest.approx(sum(e["difference"] for e in claim["per_seed"]) / 2)
    low, high = claim["low"], claim["high"]
    assert claim["verdict"] == ("holds" if low > 0 else "fails" if high < 0 else "cannot be decided")
    assert not math.isnan(low)
    assert (work / "structvpr.json").is_file()

    # A second call trains nothing: the plan lists every run as reused or done.
    plan = places_ablation.main(["--demo", str(out), "--seeds", "0", "1", "--work", str(work), "--plan-only"])["plan"]
    assert "0 to train" in plan and plan.count("done (earlier call)") == 5

    # A folder trained with another config than the one planned for it (the demo's run changed since) is
    # neither read as the variant's result nor resumed: the error names the folder and the key.
    stale = work / "structvpr-uniform-seed1" / "config.yaml"
    stale_config = yaml.safe_load(stale.read_text())
    stale_config["method"]["teachers"][0]["loss"]["weighting"] = {"name": "partition"}
    stale.write_text(yaml.safe_dump(stale_config))
    with pytest.raises(ValueError, match=r"structvpr-uniform-seed1 was trained with another config.*method\.teachers"):
        places_ablation.main(["--demo", str(out), "--seeds", "0", "1", "--work", str(work), "--plan-only"])


def test_the_script_reads_the_maps_folder_the_demo_writes():
    assert places_ablation.PREDICTED_MAPS_DIR == demo.PREDICTED_MAPS_DIR


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [(0.1, 5.0, "holds"), (0.0, 5.0, "cannot be decided"), (-3.0, -0.1, "fails"), (-3.0, 0.0, "cannot be decided"),
     (float("nan"), float("nan"), "cannot be decided")],
)  # fmt: skip
def test_verdict_reads_the_interval_ends(low, high, verdict):
    assert places_ablation._verdict(low, high) == verdict


def _fake_demo_run(out: Path, key: str, config: dict) -> None:
    """A demo run folder as `study_variants` reads it: config.yaml, and a best.safetensors that marks it finished."""
    run = out / "runs" / key
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "best.safetensors").write_bytes(b"")


def test_tscm_study_keeps_the_demo_projection_except_for_rkd_and_adds_the_direct_form(tmp_path):
    teacher = {"run": "runs/tscm-teacher", "input": "rgb", "projection": True, "loss": {"name": "soft_cross_metric"}}
    _fake_demo_run(tmp_path, "tscm-student-cm", {"method": {"name": "distill", "teachers": [teacher]}})

    variants, claims, reference = places_ablation.study_variants("tscm", tmp_path)

    by_key = {v.key: v for v in variants}
    spec = {key: v.change["method.teachers"][0] for key, v in by_key.items() if v.change}
    for name in ("soft", "cross_metric", "official"):
        assert spec[name]["projection"] is True and spec[name]["loss"] == {"name": name, "w_hard": 0.0}
        assert by_key[name].run_name == f"tscm-{name}-proj"
    assert "projection" not in spec["rkd"]  # auto: RKD compares no descriptors across the two spaces
    # Left out (auto: none between equal sizes), as the earlier direct runs' configs have it.
    assert "projection" not in spec["direct"] and spec["direct"]["loss"]["name"] == reference
    assert by_key["direct"].run_name == "tscm-soft_cross_metric"  # the folders of the earlier, direct demo form
    assert by_key[reference].reuse == "tscm-student-cm" and by_key[reference].run_name == "tscm-soft_cross_metric-proj"
    pairs = {(c.better, c.worse) for c in claims}
    assert {(reference, "direct"), (reference, "teacher"), ("teacher", "alone")} <= pairs


def test_the_single_teacher_run_is_paired_with_every_student_seed():
    variants = [
        places_ablation.Variant("student", "s", "b"),
        places_ablation.Variant("teacher", "t", "b", demo_seed_only=True),
    ]
    rows = {("student", 0): "s0", ("student", 1): "s1", ("student", 2): "s2", ("teacher", 0): "t0"}
    claim = places_ablation.Claim("student", "teacher")

    pairs = places_ablation.claim_pairs(claim, rows, variants, seeds=[0, 1, 2], demo_seed=0)

    assert pairs == [(0, "s0", "t0"), (1, "s1", "t0"), (2, "s2", "t0")]
    # Without the teacher's run, no pairs (not a pairing with nothing).
    assert places_ablation.claim_pairs(claim, {("student", 1): "s1"}, variants, [0, 1], demo_seed=0) == []
    # Two ordinary variants pair seed by seed only.
    plain = [places_ablation.Variant("a", "a", "b"), places_ablation.Variant("b", "b", "b")]
    rows = {("a", 0): "a0", ("a", 1): "a1", ("b", 1): "b1"}
    assert places_ablation.claim_pairs(places_ablation.Claim("a", "b"), rows, plain, [0, 1], 0) == [(1, "a1", "b1")]


def test_tscm_study_of_a_demo_without_projection_has_no_separate_direct_form(tmp_path):
    teacher = {"run": "runs/tscm-teacher", "input": "rgb", "loss": {"name": "soft_cross_metric"}}
    _fake_demo_run(tmp_path, "tscm-student-cm", {"method": {"name": "distill", "teachers": [teacher]}})

    variants, claims, reference = places_ablation.study_variants("tscm", tmp_path)

    keys = [v.key for v in variants]
    assert "direct" not in keys and not any("direct" in (c.better, c.worse) for c in claims)
    # The demo's rows are the direct form: their folders are the unsuffixed ones, and no run name is shared.
    assert next(v for v in variants if v.key == reference).run_name == "tscm-soft_cross_metric"
    assert len({v.run_name for v in variants}) == len(variants)


def test_variants_option_keeps_the_named_variants_and_only_the_claims_between_them(tmp_path):
    teacher = {"run": "runs/tscm-teacher", "input": "rgb", "projection": True, "loss": {"name": "soft_cross_metric"}}
    _fake_demo_run(tmp_path, "tscm-student-cm", {"method": {"name": "distill", "teachers": [teacher]}})
    variants, claims, reference = places_ablation.study_variants("tscm", tmp_path)

    kept, kept_claims = places_ablation.select_variants(variants, claims, ["alone", reference, "teacher"])

    assert [v.key for v in kept] == ["alone", reference, "teacher"]  # in the study's order
    pairs = {(c.better, c.worse) for c in kept_claims}
    assert pairs == {(reference, "alone"), (reference, "teacher"), ("teacher", "alone")}
    assert {(c.better, c.worse) for c in claims} > pairs  # the full study has more
    assert places_ablation.select_variants(variants, claims, None) == (variants, claims)
    with pytest.raises(ValueError, match=r"--variants: sofft not a variant of this study; its variants: alone, soft"):
        places_ablation.select_variants(variants, claims, ["alone", "sofft"])
