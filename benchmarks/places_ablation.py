"""Seed ablations of the demo's place-batched recipe, on a finished ``vprdistill demo`` folder.

    uv run --no-sync python benchmarks/places_ablation.py --demo OUT --study structvpr --seeds 0 1 2 --threads 2
    uv run --no-sync python benchmarks/places_ablation.py --demo OUT --study tscm --seeds 0 1 2 --threads 2
    uv run --no-sync python benchmarks/places_ablation.py --demo OUT --study teachers --seeds 0 1 2 --threads 2
    (add --plan-only to print the plan and the time estimate without training or evaluating, and
    --variants KEY ... to run only some variants and the claims between them, e.g. to fit a time budget)

Every variant starts from a demo run's ``config.yaml`` (the full resolved
config) and changes only the seed and the part the study is about; the demo's
own run is reused, not retrained, where variant and seed match it. New runs go
to ``--work`` (default ``OUT/ablation``) as ``<variant>-seed<N>`` and are
resumed, not restarted, on a second call. The teachers are the demo's (one
per kind for every seed).

Studies:

- ``structvpr``: the StructVPR RGB student (``structvpr-rgb``) alone (``method:
  {name: triplet}``, i.e. multi-similarity on place batches only), with uniform
  structural distillation (the teacher's ``loss.weighting: {name: uniform}``)
  and with partition weighting (the demo's). The uniform weighting weighs every
  in-batch tuple 1 and the distillation term is divided by the weights' sum, so
  uniform is the plain batch mean of the similarity-distribution KL, at the
  strength partition's weighted mean ``Σ w·KL / Σ w`` has
  (``vprdistill/losses/structural.py``): the two differ in which tuples teach,
  not in how strongly.
- ``tscm``: the TSCM student alone (the demo's ``tscm-student-nokd``) and
  distilled from the demo's teacher with each KD loss of ``LOSS_REGISTRY``:
  ``soft``, ``cross_metric``, ``soft_cross_metric`` (the paper's form, the
  demo's), ``official``, ``rkd``, each as ``{name: <loss>, w_hard: 0.0}`` (the
  demo's form: multi-similarity is the student's own term, every other
  parameter at its default) and, like the demo's, through its learned
  projection into the teacher's space (``projection: true``; not for ``rkd``,
  which compares distances within each model); ``direct``: the demo's loss
  without the projection (the paper's descriptors compared directly); plus the
  teacher (the demo's run, its seed only, compared with every student seed).
- ``teachers``: the student of both teachers (``combined-student``) against
  each single teacher: the TSCM teacher alone (``tscm-student-cm``) and the
  structural teacher alone (the combined config keeping only its ``input: seg``
  teacher).

Every row is evaluated on the demo's test split (the seg-branch's predicted
maps beside it), at its run's image size, with the thumbnail-16 baseline and
each variant network untrained. Per row: R@1 with its 95 % bootstrap interval
over queries and R@1 per query condition; per variant: the mean over seeds
with its Student-t 95 % interval; then the paired differences the study is
about, per seed (bootstrap interval, exact McNemar p) and over seeds
(Student-t). A claim "A beats B" **holds** when the over-seeds interval's lower
end is above 0, **fails** when its upper end is below 0, and otherwise cannot
be decided. Writes RESULTS.md section ``places-ablation-<study>`` (or
``--section``) and ``WORK/<study>.json`` (every row's recall and per-query hits).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._experiments_helpers import train_from_config_file  # noqa: E402
from benchmarks.report_sections import load_average, machine_description, today, update_section  # noqa: E402
from vprdistill.train.config import TrainConfig, flatten_dotted, load_config, resume_changes  # noqa: E402
from vprdistill.utils.atomic import atomic_write_json  # noqa: E402
from vprdistill.utils.device import set_threads  # noqa: E402

STUDIES = ("structvpr", "tscm", "teachers")
# As vprdistill/experiments/demo.py names them (kept literal here: importing the demo module is not needed
# to read its folder, and a test checks the two agree).
PREDICTED_MAPS_DIR = "segmentation-predicted"
DATA_PRESETS = ("synthcity-small", "synthcity-tiny")  # `demo` and `demo --quick`
TSCM_KD_LOSSES = ("soft", "cross_metric", "soft_cross_metric", "official", "rkd")
TARGET_MINUTES = 30  # what a study should take on a 2-core CPU; the plan says whether it fits
DEMO_KD_LOSS = "soft_cross_metric"  # the loss of the demo's tscm-student-cm and combined-student
DIRECT_KEY = "direct"  # the demo's KD loss without its projection: the paper's descriptors compared directly


@dataclass
class Variant:
    """One row kind of a study: a demo run's config with a change, trained once per seed."""

    key: str  # short name in the tables and the JSON
    label: str
    base: str  # the demo run whose config.yaml the variant starts from
    change: dict[str, Any] = field(default_factory=dict)  # load_config mapping overrides beyond the seed
    reuse: str | None = None  # the demo run that *is* this variant at the demo's seed
    run_name: str = ""  # folder stem under WORK (shared between studies when the config is the same)
    demo_seed_only: bool = False  # the TSCM teacher: the demo's run, not retrained per seed


@dataclass(frozen=True)
class Claim:
    better: str  # variant keys: "better − worse" is the difference tested
    worse: str


@dataclass
class PlannedRun:
    variant: Variant
    seed: int
    run_dir: Path
    config: TrainConfig
    overrides: list[dict[str, Any]]
    reused: bool  # the demo's own run
    finished: bool  # a folder with every epoch trained (the demo's, or an earlier call's)
    seconds: float | None  # estimated training time when it has to train; None when not known
    seconds_per_epoch: float | None = None  # of the demo run the variant starts from (metrics.jsonl)


def _demo_run(demo: Path, key: str) -> Path:
    run_dir = demo / "runs" / key
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "best.safetensors").is_file():
        raise FileNotFoundError(
            f"{run_dir}: not a finished demo run (needs config.yaml and best.safetensors); run `vprdistill demo "
            f"--out {demo}` to the end first"
        )
    return run_dir


def _run_config(demo: Path, key: str) -> dict[str, Any]:
    return yaml.safe_load((_demo_run(demo, key) / "config.yaml").read_text())


def demo_dataset(demo: Path) -> Path:
    """The dataset folder of a demo output (``OUT/data/synthcity-small``, or ``-tiny`` for ``--quick``)."""
    for name in DATA_PRESETS:
        if (demo / "data" / name).is_dir():
            return demo / "data" / name
    raise FileNotFoundError(
        f"{demo / 'data'}: none of {', '.join(DATA_PRESETS)}; is {demo} a `vprdistill demo` output?"
    )


def _teachers(demo: Path, key: str) -> list[dict[str, Any]]:
    teachers = (_run_config(demo, key).get("method") or {}).get("teachers") or []
    if not teachers:
        raise ValueError(f"{demo / 'runs' / key / 'config.yaml'}: method.teachers is empty; expected a distilled run")
    return copy.deepcopy(teachers)


def _with_loss(
    teachers: list[dict[str, Any]],
    kind: str,
    loss: Callable[[dict[str, Any]], dict[str, Any]],
    projection: bool | None = None,
) -> list[dict[str, Any]]:
    """The teachers with the loss of those of ``input: kind`` replaced by ``loss(old_loss)``.

    ``projection``: their ``projection`` set to it, or (None) left out, i.e. ``auto``.
    """
    if not any(t.get("input") == kind for t in teachers):
        raise ValueError(f"no teacher with input: {kind} in {teachers}")

    def changed(teacher: dict[str, Any]) -> dict[str, Any]:
        out = {key: value for key, value in teacher.items() if key != "projection"}
        out["loss"] = loss(dict(teacher.get("loss") or {}))
        return out if projection is None else {**out, "projection": projection}

    return [changed(t) if t.get("input") == kind else t for t in teachers]


def _projection(teachers: list[dict[str, Any]]) -> bool | None:
    """The ``projection`` of the demo's RGB (TSCM) teacher: True where it sets one, None (auto) otherwise."""
    value = next(t.get("projection") for t in teachers if t.get("input") == "rgb")
    return True if value is True else None


def _tscm_run_name(loss: str, projection: bool | None) -> str:
    """Folder stem of a TSCM-distilled run: ``-proj`` marks the runs through the projection."""
    return f"tscm-{loss}{'-proj' if projection else ''}"


def study_variants(study: str, demo: Path) -> tuple[list[Variant], list[Claim], str]:
    """The variants of ``study``, the claims it tests, and the variant the configs are compared against."""
    if study == "structvpr":
        uniform = _with_loss(
            _teachers(demo, "structvpr-rgb"), "seg", lambda loss: {**loss, "weighting": {"name": "uniform"}}
        )
        variants = [
            Variant("alone", "RGB alone (multi-similarity, no teacher)", "structvpr-rgb", {"method": {"name": "triplet"}}, run_name="structvpr-alone"),
            Variant("uniform", "RGB + structural KD, uniform weighting", "structvpr-rgb", {"method.teachers": uniform}, run_name="structvpr-uniform"),
            Variant("partition", "RGB + structural KD, partition weighting (demo)", "structvpr-rgb", reuse="structvpr-rgb", run_name="structvpr-partition"),
        ]  # fmt: skip
        claims = [Claim("partition", "uniform"), Claim("partition", "alone"), Claim("uniform", "alone")]
        return variants, claims, "partition"
    if study == "tscm":
        teachers = _teachers(demo, "tscm-student-cm")
        variants = [
            Variant("alone", "TSCM student alone (demo's no-KD run)", "tscm-student-nokd", reuse="tscm-student-nokd", run_name="tscm-alone"),
        ]  # fmt: skip
        for name in TSCM_KD_LOSSES:
            # The demo's projection (student -> teacher space) for the losses that compare descriptors;
            # RKD compares distances within each model, so it has none.
            projection = None if name == "rkd" else _projection(teachers)
            change = {
                "method.teachers": _with_loss(
                    teachers, "rgb", lambda _old, n=name: {"name": n, "w_hard": 0.0}, projection
                )
            }
            label = f"student + {name} KD" + (" through the projection" if projection else "")
            variants.append(
                Variant(
                    name, label + (" (demo)" if name == DEMO_KD_LOSS else ""), "tscm-student-cm", change,
                    reuse="tscm-student-cm" if name == DEMO_KD_LOSS else None, run_name=_tscm_run_name(name, projection),
                )
            )  # fmt: skip
        claims = [Claim(name, "alone") for name in TSCM_KD_LOSSES]
        if _projection(teachers):  # without a projection, the demo's own rows are the direct form already
            # projection left out (auto): none between the demo's equal-sized descriptors (512 -> 512), and
            # a teacher of another size cannot be compared directly at all.
            direct = _with_loss(teachers, "rgb", lambda _old: {"name": DEMO_KD_LOSS, "w_hard": 0.0})
            variants.append(
                Variant(DIRECT_KEY, f"student + {DEMO_KD_LOSS} KD compared directly (no projection)", "tscm-student-cm", {"method.teachers": direct}, run_name=_tscm_run_name(DEMO_KD_LOSS, None))
            )  # fmt: skip
            claims += [Claim(DIRECT_KEY, "alone"), Claim(DEMO_KD_LOSS, DIRECT_KEY)]
        variants.append(
            Variant("teacher", "TSCM teacher (demo's run)", "tscm-teacher", reuse="tscm-teacher", run_name="tscm-teacher", demo_seed_only=True)
        )  # fmt: skip
        claims += [Claim("teacher", "alone"), Claim(DEMO_KD_LOSS, "teacher")]
        return variants, claims, DEMO_KD_LOSS
    if study == "teachers":
        structural_only = [t for t in _teachers(demo, "combined-student") if t.get("input") == "seg"]
        if not structural_only:
            raise ValueError(f"{demo / 'runs' / 'combined-student' / 'config.yaml'}: no teacher with input: seg")
        variants = [
            Variant("combined", "student of both teachers (demo)", "combined-student", reuse="combined-student", run_name="combined"),
            # The same config as the tscm study's soft_cross_metric rows: one folder serves both.
            Variant("tscm-only", "student of the TSCM teacher only (demo's cross-metric run)", "tscm-student-cm", reuse="tscm-student-cm", run_name=_tscm_run_name(DEMO_KD_LOSS, _projection(_teachers(demo, "tscm-student-cm")))),
            Variant("structural-only", "student of the structural teacher only", "combined-student", {"method.teachers": structural_only}, run_name="teachers-structural-only"),
        ]  # fmt: skip
        return variants, [Claim("combined", "tscm-only"), Claim("combined", "structural-only")], "combined"
    raise ValueError(f"--study must be one of {', '.join(STUDIES)}, got {study!r}")


def config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """The dotted keys in which two resolved configs differ (``method.teachers`` compared as one value)."""

    def flat(config: TrainConfig) -> dict[str, Any]:
        raw = config.to_dict()
        teachers = (raw.get("method") or {}).pop("teachers", None)
        out = flatten_dotted(raw)
        out["method.teachers"] = teachers
        return out

    fa, fb = flat(a), flat(b)
    return sorted(key for key in fa.keys() | fb.keys() if fa.get(key) != fb.get(key))


def _epoch_seconds(run_dir: Path) -> list[float]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    seconds = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted write
        if isinstance(record, dict) and isinstance(record.get("seconds"), (int, float)):
            seconds.append(float(record["seconds"]))
    return seconds


def _finished(run_dir: Path, epochs: int) -> bool:
    return (run_dir / "best.safetensors").is_file() and len(_epoch_seconds(run_dir)) >= epochs


def _check_earlier_run(run_dir: Path, config: TrainConfig) -> None:
    """An earlier call's folder is read or resumed only if it was trained with the config planned now.

    A demo run trained again with another recipe changes every variant's config; a folder from before
    would otherwise be read as the new variant's result.
    """
    try:
        resume_changes(run_dir / "config.yaml", config)
    except ValueError as error:
        raise ValueError(
            f"{run_dir} was trained with another config than this study plans for it (the demo's runs changed "
            f"since?); delete it or pass another --work. {error}"
        ) from None


def _check_paths(config: TrainConfig, source: Path) -> None:
    """The folders a new run reads exist (a demo run with a relative --out names them from its own folder)."""
    named = {"data.dataset": config.data.dataset, "data.places": config.data.places}
    for position, teacher in enumerate(config.method.get("teachers") or []):
        if isinstance(teacher, dict) and "run" in teacher:
            named[f"method.teachers[{position}].run"] = teacher["run"]
    for key, value in named.items():
        if value and not Path(value).exists():
            raise FileNotFoundError(
                f"{source}: {key} is {value}, which does not exist from {Path.cwd()}; run this script from the "
                "folder the demo ran in (its paths are relative to it) or give the demo an absolute --out"
            )


def select_variants(
    variants: list[Variant], claims: list[Claim], only: Sequence[str] | None
) -> tuple[list[Variant], list[Claim]]:
    """The variants named in ``only`` (None: all), and the claims between two of them.

    Raises:
        ValueError: a name that is no variant of the study (the message lists the study's).
    """
    if only is None:
        return variants, claims
    keys = [v.key for v in variants]
    unknown = [name for name in only if name not in keys]
    if unknown:
        raise ValueError(
            f"--variants: {', '.join(unknown)} not a variant of this study; its variants: {', '.join(keys)}"
        )
    kept = [v for v in variants if v.key in only]
    return kept, [c for c in claims if c.better in only and c.worse in only]


def plan_runs(
    study: str, demo: Path, work: Path, seeds: Sequence[int], only: Sequence[str] | None = None
) -> tuple[list[PlannedRun], list[Claim], int]:
    """Every (variant, seed) run of ``study``: its folder, resolved config, and whether it is reused or trained.

    ``only``: the variant keys to plan (None: every variant of the study).
    Returns the runs, the claims and the demo's seed.
    """
    variants, claims = select_variants(*study_variants(study, demo)[:2], only)
    demo_seed = int(_run_config(demo, "structvpr-rgb" if study == "structvpr" else "tscm-student-cm")["seed"])
    runs = []
    for variant in variants:
        base_dir = _demo_run(demo, variant.base)
        per_epoch = _epoch_seconds(base_dir)
        for seed in [demo_seed] if variant.demo_seed_only else seeds:
            overrides = [{"seed": seed}] + ([variant.change] if variant.change else [])
            config = load_config(base_dir / "config.yaml", overrides)
            reused = variant.reuse is not None and seed == demo_seed
            run_dir = _demo_run(demo, variant.reuse) if reused else work / f"{variant.run_name}-seed{seed}"
            if not reused and (run_dir / "config.yaml").is_file():
                _check_earlier_run(run_dir, config)
            finished = reused or _finished(run_dir, config.epochs)
            seconds = None
            if not finished and per_epoch:
                done = len(_epoch_seconds(run_dir))
                seconds = (config.epochs - done) * sum(per_epoch) / len(per_epoch)
            if not finished:
                _check_paths(config, base_dir / "config.yaml")
            mean = sum(per_epoch) / len(per_epoch) if per_epoch else None
            runs.append(PlannedRun(variant, seed, run_dir, config, overrides, reused, finished, seconds, mean))
    return runs, claims, demo_seed


def claim_pairs(
    claim: Claim, rows: dict[tuple[str, int], Any], variants: Sequence[Variant], seeds: Sequence[int], demo_seed: int
) -> list[tuple[int, Any, Any]]:
    """``(seed, better row, worse row)`` for every seed both variants of ``claim`` have rows for.

    A variant of the demo's seed only (the teacher: one run) is paired with every seed of the other variant,
    so that the interval over seeds holds the other's seed-to-seed spread only.
    """
    fixed = {v.key for v in variants if v.demo_seed_only}

    def of(key: str) -> dict[int, Any]:
        found = {seed: row for (k, seed), row in rows.items() if k == key}
        return {seed: found[demo_seed] for seed in seeds} if key in fixed and demo_seed in found else found

    better, worse = of(claim.better), of(claim.worse)
    return [(seed, better[seed], worse[seed]) for seed in seeds if seed in better and seed in worse]


def plan_text(study: str, demo: Path, runs: list[PlannedRun], reference: str) -> str:
    """The plan printed before training: runs reused, runs to train, what each config changes, the time estimate."""
    lines = [f"plan of the {study} study on {demo}:"]
    references = {r.seed: r.config for r in runs if r.variant.key == reference}
    for run in runs:
        state = "reuse (demo run)" if run.reused else "done (earlier call)" if run.finished else "train"
        compare_to = references.get(run.seed)
        diff = config_differences(compare_to, run.config) if compare_to is not None else []
        against = (
            f"vs {reference} seed {run.seed}: " + (", ".join(diff) or "same config")
            if compare_to is not None
            else f"{reference} not planned"
        )
        if run.variant.key == reference:
            against = f"vs demo {run.variant.base}: " + (", ".join(config_differences(
                load_config(demo / "runs" / run.variant.base / "config.yaml"), run.config)) or "same config")  # fmt: skip
        eta = f", about {_duration(run.seconds)}" if run.seconds is not None else ""
        lines.append(
            f"  {state:20s} {run.variant.key:18s} seed {run.seed}  {run.run_dir}  "
            f"({run.config.epochs} epochs{eta}; {against})"
        )
    to_train = [r for r in runs if not r.finished]
    known = [r.seconds for r in to_train if r.seconds is not None]
    total = _duration(sum(known)) if known else "unknown (no metrics.jsonl in the demo's runs)"
    unknown = len(to_train) - len(known)
    per_epoch = sorted({round(r.seconds_per_epoch, 1) for r in to_train if r.seconds_per_epoch is not None})
    lines.append(
        f"  {len(runs) - len(to_train)} runs reused or done, {len(to_train)} to train: about {total} of training"
        + (f" (+ {unknown} runs of unknown time)" if known and unknown else "")
        + " at the demo's own s/epoch (metrics.jsonl 'seconds' of the run each variant starts from"
        + (f": {', '.join(str(s) for s in per_epoch)} s/epoch" if per_epoch else "")
        + "; the demo may have run with other threads), plus one test-split evaluation per row."
    )
    if known:
        fits = sum(known) <= TARGET_MINUTES * 60
        lines.append(
            f"  the {TARGET_MINUTES}-minute target: {'fits' if fits else 'over'} "
            f"(training alone {'within' if fits else 'beyond'} it"
            + ("" if fits else "; fewer --seeds, or a demo folder of a smaller budget, brings it down")
            + ")"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _verdict(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "cannot be decided"
    if low > 0:
        return "holds"
    if high < 0:
        return "fails"
    return "cannot be decided"


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the study (or print its plan); returns what ``WORK/<study>.json`` holds (the plan with ``--plan-only``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="a finished `vprdistill demo` output folder")
    parser.add_argument("--study", choices=STUDIES, default="structvpr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=None, help="where new runs go (default DEMO/ablation)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--section", default=None, help="RESULTS.md section (default places-ablation-<study>)")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md as it is (the JSON is written)")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and the estimate; train nothing")
    parser.add_argument(
        "--variants", nargs="+", default=None, metavar="KEY",
        help="only these variants (and the claims between them), e.g. to fit a time budget; default all",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from vprdistill.data.readers import open_dataset
    from vprdistill.eval.statistics import detectable_difference, mean_interval, paired_comparison
    from vprdistill.experiments.baselines import evaluate_run_row, thumbnail_row, untrained_row

    set_threads(args.threads)
    started, load_before = time.time(), load_average()
    demo = args.demo
    work = args.work or demo / "ablation"
    section = args.section or f"places-ablation-{args.study}"
    seeds = list(dict.fromkeys(args.seeds))
    all_variants, all_claims, reference = study_variants(args.study, demo)
    variants, _ = select_variants(all_variants, all_claims, args.variants)
    runs, claims, demo_seed = plan_runs(args.study, demo, work, seeds, args.variants)
    plan = plan_text(args.study, demo, runs, reference)
    print(plan, flush=True)
    if args.plan_only:
        return {"plan": plan}

    commands = {}
    for run in runs:
        config_path = demo / "runs" / run.variant.base / "config.yaml"
        if run.reused:
            commands[(run.variant.key, run.seed)] = f"(the demo's run {run.run_dir})"
            continue
        if run.finished:  # an earlier call's run, every epoch trained: read as it is, not resumed
            commands[(run.variant.key, run.seed)] = f"(an earlier call's run {run.run_dir})"
            continue
        print(f"training {run.variant.key} seed {run.seed} -> {run.run_dir}", flush=True)
        _, commands[(run.variant.key, run.seed)] = train_from_config_file(config_path, run.overrides, run.run_dir)

    dataset = demo_dataset(demo)
    test_set = open_dataset(dataset, split="test", segmentation_dir=PREDICTED_MAPS_DIR)
    names = sorted(set(test_set.query_conditions()))
    rows: dict[tuple[str, int], Any] = {}
    for run in runs:
        side = int(run.config.data.image_size[0]), int(run.config.data.image_size[1])
        row = evaluate_run_row(
            run.run_dir, test_set, f"{run.variant.key} seed {run.seed}", run.variant.label, image_size=side,
            device="cpu", input_kind=run.config.data.input,
        )  # fmt: skip
        rows[(run.variant.key, run.seed)] = row
        print(f"{run.variant.key} seed {run.seed}: R@1 {row.recall['1']:.1f}", flush=True)
    first = runs[0].config
    baselines = [thumbnail_row(test_set, (int(first.data.image_size[0]), int(first.data.image_size[1])), "cpu")]
    networks: dict[str, list[PlannedRun]] = {}
    for run in runs:  # one untrained row per network (model config and input size), at the first seed's init
        networks.setdefault(json.dumps([run.config.model, run.config.data.image_size], sort_keys=True), []).append(run)
    for group in networks.values():
        run = group[0]
        model = run.config.model
        preset = model.get("preset", "model") if isinstance(model, dict) else model
        name = f"{preset} network of {', '.join(dict.fromkeys(r.variant.key for r in group))}"
        side = int(run.config.data.image_size[0]), int(run.config.data.image_size[1])
        baselines.append(untrained_row(run.config, test_set, name, side, "cpu", input_kind=run.config.data.input))

    def cells(row) -> str:
        low, high = row.recall_ci["1"]
        per_condition = [_fmt(row.recall_per_condition.get(c, {}).get("1", float("nan"))) for c in names]
        return f"{row.recall['1']:.1f} [{low:.1f}, {high:.1f}] | " + " | ".join(per_condition)

    lines = ["| row | seed | R@1 [95 % CI] | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    for row in baselines:
        lines.append(f"| {row.name} | – | {cells(row)} |")
    for run in runs:
        lines.append(f"| {run.variant.label} | {run.seed} | {cells(rows[(run.variant.key, run.seed)])} |")

    means = [
        "| variant | seeds | R@1 mean [Student-t 95 %] | " + " | ".join(names) + " |",
        "|---" * (len(names) + 3) + "|",
    ]
    summary: dict[str, Any] = {}
    for variant in variants:
        group = [rows[(r.variant.key, r.seed)] for r in runs if r.variant.key == variant.key]
        mean, low, high = mean_interval([row.recall["1"] for row in group])
        per_condition = {
            c: sum(row.recall_per_condition.get(c, {}).get("1", float("nan")) for row in group) / len(group)
            for c in names
        }
        summary[variant.key] = {
            "mean": mean,
            "low": low,
            "high": high,
            "seeds": len(group),
            "per_condition": per_condition,
        }
        means.append(
            f"| {variant.label} | {len(group)} | {mean:.1f} [{_fmt(low)}, {_fmt(high)}] | "
            + " | ".join(_fmt(per_condition[c]) for c in names)
            + " |"
        )

    labels = {v.key: v.label for v in variants}
    comparisons, verdicts = [], []
    for claim in claims:
        pairs = claim_pairs(claim, rows, variants, seeds, demo_seed)
        per_seed = []
        for seed, a, b in pairs:
            paired = paired_comparison(a.hits["1"], b.hits["1"])
            per_seed.append({"seed": seed, "difference": paired.difference, "low": paired.low, "high": paired.high,
                             "p_value": paired.p_value})  # fmt: skip
            verdicts.append(f"seed {seed}: {claim.better} − {claim.worse} {paired}")
        if not pairs:
            continue
        mean, low, high = mean_interval([p["difference"] for p in per_seed])
        verdict = _verdict(low, high)
        comparisons.append({"better": claim.better, "worse": claim.worse, "per_seed": per_seed, "mean": mean,
                            "low": low, "high": high, "verdict": verdict})  # fmt: skip
        # Equal differences on every seed give a zero-width interval: the rule still reads it, but says so.
        degenerate = len(pairs) > 1 and low == high
        verdicts.append(
            f"**{labels[claim.better]} − {labels[claim.worse]}** over {len(pairs)} seed(s): {mean:+.1f} R@1, Student-t "
            f"95 % [{_fmt(low)}, {_fmt(high)}]: the claim that it is above 0 **{verdict}**"
            + (" (the same difference on every seed: a zero-width interval, not a precise one)" if degenerate else "")
        )
    smallest = detectable_difference(30.0, test_set.num_queries)
    minutes = (time.time() - started) / 60
    load_after = load_average()
    command = (
        f"uv run --no-sync python benchmarks/places_ablation.py --demo {demo} --study {args.study} --seeds "
        + " ".join(map(str, seeds))
        + (f" --work {args.work}" if args.work else "")
        + (f" --threads {args.threads}" if args.threads else "")
    )
    counts = {c: test_set.query_conditions().count(c) for c in names}
    body = "\n".join(
        [
            f"## Place-batched recipe, {args.study} ablation over seeds (demo folder)",
            "",
            f"Command: `{command}`",
            f"Machine: {machine_description()}; date {today()}; load average {load_before} before, {load_after} "
            f"after; {minutes:.1f} min. Runs: the demo's configs ({demo}, seed {demo_seed}) with only the seed and "
            "the studied part changed; the demo's own runs reused at its seed. Test split: "
            f"{test_set.num_queries} queries ({', '.join(f'{c}: {n}' for c, n in counts.items())}), "
            f"{test_set.num_database} database images, 25 m. Intervals per row: 95 % bootstrap over queries; over "
            "seeds: Student-t 95 %; paired differences on the same queries with exact McNemar p.",
            "",
            *lines,
            "",
            *means,
            "",
            *[f"- {v}" for v in verdicts],
            f"- Two independent figures near 30 % differ detectably at {test_set.num_queries} queries from about "
            f"{smallest:.1f} points; the verdicts read the seed-to-seed interval, which needs 2 or more seeds.",
        ]
    )
    print(body)
    record = {
        "study": args.study,
        "demo": str(demo),
        "seeds": seeds,
        "demo_seed": demo_seed,
        "command": command,
        "num_queries": test_set.num_queries,
        "conditions": counts,
        "rows": [
            {
                **rows[(r.variant.key, r.seed)].to_dict(),
                "variant": r.variant.key,
                "seed": r.seed,
                "reused": r.reused,
                "config_seed": r.config.seed,
                "train_command": commands[(r.variant.key, r.seed)],
            }
            for r in runs
        ],
        "baselines": [row.to_dict() for row in baselines],
        "variants": summary,
        "comparisons": comparisons,
        "minutes": minutes,
    }
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / f"{args.study}.json", record)
    if not args.no_write:
        update_section(section, body, file_name="RESULTS.md")
    return record


if __name__ == "__main__":
    main()
