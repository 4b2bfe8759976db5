"""``vprdistill demo``: the whole method on built-in data, from an empty folder to a report.

Generates (or reuses) SynthCity with a place set (P places × K views under
several conditions); trains a small SegFormer on day images of the train split
and writes its **predicted** maps for the place set and the test split, so that
StructVPR's seg-branch learns and is tested on maps as bad as a real
segmenter's at night, in fog and in snow (SynthCity's ground-truth maps would
be an oracle); trains every model with place batches (multi-similarity loss and
miner; distillation on in-batch tuples): the tiny TSCM teacher, the tiny
student with cross-metric KD and without KD, the StructVPR seg-branch and the
weighted RGB student, one student from both teachers at once; then evaluates
every model on the test split (overall and per query condition) beside its
baselines — the ``thumbnail-16`` preset and each network untrained (same config
and seed) — with 95 % bootstrap intervals and paired comparisons, and writes
``report.md`` / ``report.html`` (with the segmenter's mIoU per condition).

Every model is an ordinary run folder under ``OUT/runs/``: usable with
``eval``, ``index``, ``localize`` and ``export``. Re-running the demo resumes
finished runs instead of training them again.
"""

from __future__ import annotations

import datetime
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vprdistill.data.synth.places import PLACES_ROOT as PLACES_FOLDER
from vprdistill.experiments.baselines import THUMBNAIL_PRESET, evaluate_run_row, thumbnail_row, untrained_row
from vprdistill.experiments.evaluation import machine_line, retrieval_grid
from vprdistill.experiments.plots import recall_against_speed, recall_curves, recall_per_condition
from vprdistill.experiments.report import summary_table, text_table, write_report
from vprdistill.experiments.rows import ResultRow
from vprdistill.experiments.stages import Stage, StageProgress
from vprdistill.train.amp_compile import has_native_bf16
from vprdistill.train.config import load_config
from vprdistill.train.loop import train
from vprdistill.utils.atomic import atomic_write_json
from vprdistill.utils.device import resolve_device, set_threads
from vprdistill.utils.logging import get_logger

logger = get_logger("demo")


@dataclass
class DemoBudget:
    """How much data and training the demo spends; ``quick`` is a smoke run of the same pipeline."""

    synth_preset: str
    image_size: int  # the side models train and are evaluated at
    epochs: int
    train_places: int
    views_per_place: int  # views of each place SynthCity writes (one per condition in the full budget)
    places_per_batch: int
    views_per_batch: int  # of a place's views, how many each batch holds (K of P x K)
    max_val_queries: int  # 0: no validation split, the last epoch is kept
    segmenter_epochs: int
    synth: dict = field(default_factory=dict)  # further SynthCity parameters

    def __post_init__(self) -> None:
        if not 2 <= self.views_per_batch <= self.views_per_place:
            raise ValueError(
                f"DemoBudget: views_per_batch must be between 2 and views_per_place ({self.views_per_place}), "
                f"got {self.views_per_batch}"
            )

    @property
    def dataset_image_size(self) -> int:
        """The side SynthCity renders at, and the segmenter reads: twice the models' (crops have room)."""
        return max(2 * self.image_size, 64)

    @property
    def segmented_splits(self) -> list[str]:
        """The splits whose photos get predicted maps: the test split, and the validation split when used."""
        return ["val", "test"] if self.max_val_queries else ["test"]


# `small` with a training region of 4 blocks: room for 700 distinct places (12 m apart per heading),
# each seen under all 8 conditions; a batch holds 8 places with all 8 views, every condition of each
# place at once (4 of the 8 views left the student trained alone at the thumbnail's level: RESULTS.md,
# views-per-batch).
# No validation split: on 160 validation queries the "best" epoch is noise, so the last one is kept.
# The segmenter: 10 epochs over the train split's day images (RESULTS.md, segmenter-miou, had 25).
FULL = DemoBudget("small", 64, 8, 700, 8, 8, 8, 0, segmenter_epochs=10, synth={"train_blocks": 4})
QUICK = DemoBudget("tiny", 48, 1, 12, 3, 4, 3, 40, segmenter_epochs=1)

# Where `vprdistill segment` writes the segmenter's maps: beside SynthCity's ground-truth ones, which
# no demo model reads.
PREDICTED_MAPS_DIR = "segmentation-predicted"
PREDICTED_PLACE_MAPS_DIR = "Segmentation-predicted"
SEGMENTER_FOLDER = "segmenter"


@dataclass
class DemoModel:
    key: str
    preset: str
    name: str
    description: str
    teachers: list[dict] = field(default_factory=list)  # teacher specs; "run" holds another model's key
    # The teacher's larger budget (TSCM's teacher is the stronger model): a factor on the image side
    # and on the epochs of the demo's budget.
    image_scale: float = 1.0
    epoch_scale: float = 1.0

    def image_size(self, budget: DemoBudget) -> int:
        return int(round(budget.image_size * self.image_scale / 16) * 16)

    def epochs(self, budget: DemoBudget) -> int:
        return max(1, round(budget.epochs * self.epoch_scale))

    @property
    def input_kind(self) -> str:
        return "seg" if self.key == SEG_BRANCH_KEY else "rgb"

    @property
    def reads_maps(self) -> bool:
        """Whether training reads segmentation maps: the seg-branch, and students of the seg-branch."""
        return self.input_kind == "seg" or any(t["input"] == "seg" for t in self.teachers)


SEG_BRANCH_KEY = "structvpr-seg"  # the one demo model that reads segmentation maps, not photos
# The two teachers' distillation, as the students' configs name them ("run": the teacher's model key).
# TSCM's soft + cross-metric terms reach the student through a learned linear projection (512 -> 512):
# compared directly, a from-scratch student spends itself copying the teacher's coordinates and falls
# below the student trained alone; through the projection it rises above its teacher (RESULTS.md,
# tscm-projection).
_TSCM_KD = {
    "run": "tscm-teacher",
    "input": "rgb",
    "projection": True,
    "loss": {"name": "soft_cross_metric", "w_hard": 0.0},
}
# The structural term at 0.3: with every view of a place in each batch, at weight 1 it pulled the RGB
# student 5.4 points below the same network alone on the validation city; at 0.3 it lifts it 9.4 above
# (RESULTS.md, views-per-batch).
_STRUCTURAL_KD = {
    "run": SEG_BRANCH_KEY,
    "input": "seg",
    "loss": {"name": "structural", "w_hard": 0.0, "w_kd": 0.3, "weighting": {"name": "partition"}},
}

DEMO_MODELS = [
    DemoModel(
        "tscm-teacher",
        "tscm/synth-teacher-places",
        "TSCM teacher",
        "ResNet stage-3 + ViT + inter-transformer with three NetVLAD-Loupe heads (the heavy model), "
        "trained for 3x the students' epochs.",
        # With every view of a place in each batch, the student alone learns fast: at 1.5x its epochs the
        # teacher was below it on the validation city (47.3 vs 52.1), at 3x above (59.2; RESULTS.md,
        # views-per-batch). The paper's teacher is the stronger model too, by capacity and budget.
        epoch_scale=3.0,
    ),
    DemoModel(
        "tscm-student-nokd",
        "tscm/synth-student-places-nokd",
        "TSCM student, no KD",
        "The light student (ResNet stage-3 GeM + patch-embedding VLAD) trained alone (multi-similarity).",
    ),
    DemoModel(
        "tscm-student-cm",
        "tscm/synth-student-places",
        "TSCM student, cross-metric KD",
        "The same student distilled from the frozen teacher with soft + cross-metric KD (TSCM), through a "
        "learned projection into the teacher's space.",
        teachers=[_TSCM_KD],
    ),
    DemoModel(
        "structvpr-seg",
        "structvpr/synth-seg-places",
        "StructVPR seg-branch (predicted maps)",
        "A CNN that sees only one-hot structural maps (road, building, sky, ...) of the demo's segmenter, "
        "in training and here at test time; StructVPR runs it only to teach the RGB network.",
    ),
    DemoModel(
        "structvpr-rgb",
        "structvpr/synth-rgb-places",
        "StructVPR RGB, weighted KD",
        "An RGB CNN with multi-similarity + partition-weighted structural distillation from the seg-branch "
        "(which reads predicted maps); photos only at test time.",
        teachers=[_STRUCTURAL_KD],
    ),
    DemoModel(
        "combined-student",
        "combined/synth-student-places",
        "Student from both teachers",
        "The TSCM student with cross-metric KD from the TSCM teacher and weighted structural KD from "
        "the seg-branch at once (neither paper does this).",
        teachers=[_TSCM_KD, _STRUCTURAL_KD],
    ),
]


def _overrides(model: DemoModel, budget: DemoBudget, dataset: Path, runs: Path, seed: int) -> list[str]:
    overrides = [
        f"data.dataset={dataset}",
        f"data.places={dataset / PLACES_FOLDER}",
        f"data.image_size=[{model.image_size(budget)}, {model.image_size(budget)}]",
        f"epochs={model.epochs(budget)}",
        f"data.places_per_batch={budget.places_per_batch}",
        f"data.views_per_place={budget.views_per_batch}",
        f"seed={seed}",
    ]
    overrides += [f"data.max_val_queries={budget.max_val_queries}"] if budget.max_val_queries else ["data.val_split="]
    if model.reads_maps:
        overrides += [
            f"data.places_segmentation_dir={PREDICTED_PLACE_MAPS_DIR}",
            f"data.segmentation_dir={PREDICTED_MAPS_DIR}",
        ]
    if model.teachers:
        teachers = [dict(t, run=str(runs / t["run"])) for t in model.teachers]
        overrides.append("method.teachers=" + yaml.safe_dump(teachers, default_flow_style=True, width=10_000).strip())
    return overrides


def run_demo(
    out_dir: str | Path = "demo_out",
    quick: bool = False,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    dataset: str | Path | None = None,
) -> tuple[Path, Path, list[ResultRow]]:
    """Run the demo; returns the paths of ``report.md`` and ``report.html`` and the trained models' rows.

    ``results.json`` holds those rows and, under ``baselines``, the thumbnail and untrained rows.
    """
    from vprdistill.data.readers import open_dataset
    from vprdistill.data.synth import generate

    out_dir = Path(out_dir)
    budget = QUICK if quick else FULL
    set_threads(threads)
    torch_device = resolve_device(device)
    dataset_dir = Path(dataset) if dataset else out_dir / "data" / f"synthcity-{budget.synth_preset}"
    runs = out_dir / "runs"
    stages = [
        Stage("data", f"SynthCity '{budget.synth_preset}' dataset", 1.0),
        Stage("segmenter", "train the segmenter on day images of the train split", 1.5),
        Stage("segment", "write the segmenter's maps for the place set and the test split", 0.5),
    ]
    stages += [Stage(m.key, f"train {m.name}", 3.0 if m.key == "tscm-teacher" else 2.0) for m in DEMO_MODELS]
    stages += [
        Stage("eval", "evaluate every model on the test split", 1.5),
        Stage("baselines", "evaluate the baselines: thumbnail-16 and every network untrained", 0.8),
        Stage("report", "write the report", 0.3),
    ]
    progress = StageProgress(stages)

    if dataset is None:
        progress.run(
            "data",
            lambda: generate(
                dataset_dir,
                preset=budget.synth_preset,
                seed=seed,
                image_size=budget.dataset_image_size,
                train_places=budget.train_places,
                views_per_place=budget.views_per_place,
                **budget.synth,
            ),
        )
    else:
        progress.run("data", lambda: None)
    segmenter_dir = out_dir / SEGMENTER_FOLDER
    segmenter = progress.run(
        "segmenter", lambda: _train_segmenter(dataset_dir, segmenter_dir, budget, seed, torch_device)
    )
    progress.run("segment", lambda: _write_predicted_maps(dataset_dir, segmenter_dir, budget, torch_device))
    # bfloat16 autocast where the hardware has it: about 1.4x faster steps on an AVX-512 BF16 CPU
    # (BENCHMARKS.md, demo-timing-full), at the same recall (RESULTS.md, demo-place-recipe).
    amp = "bf16" if has_native_bf16(torch_device) else "off"
    commands: dict[str, str] = {}
    configs = {}
    for model in DEMO_MODELS:
        overrides = _overrides(model, budget, dataset_dir, runs, seed) + [f"device={torch_device.type}", f"amp={amp}"]
        run_dir = runs / model.key
        config = load_config(model.preset, overrides)
        configs[model.key] = config
        resume = (run_dir / "last_state.pt").is_file()
        progress.run(model.key, lambda c=config, r=run_dir, again=resume: train(c, r, resume=again))
        commands[model.key] = (
            "vprdistill train " + model.preset + " " + " ".join(shlex.quote(o) for o in overrides) + f" --out {run_dir}"
        )

    # The seg-branch reads the segmenter's maps of the test photos; every other model reads the photos.
    test_set = open_dataset(dataset_dir, split="test", segmentation_dir=PREDICTED_MAPS_DIR)
    image_size = (budget.image_size, budget.image_size)  # of the students; each model is read at its own size

    def evaluate_all() -> list[ResultRow]:
        rows = []
        for model in DEMO_MODELS:
            eval_command = (
                f"vprdistill eval --model {runs / model.key} --dataset {dataset_dir} --split test "
                f"--image-size {model.image_size(budget)}"
                + (f" --input seg --segmentation-dir {PREDICTED_MAPS_DIR}" if model.input_kind == "seg" else "")
            )
            size = (model.image_size(budget),) * 2
            rows.append(
                evaluate_run_row(
                    runs / model.key, test_set, model.name, model.description, image_size=size, device=torch_device,
                    input_kind=model.input_kind, command=commands[model.key] + "\n  " + eval_command,
                )
            )  # fmt: skip
        return rows

    rows = progress.run("eval", evaluate_all)

    def evaluate_baselines() -> list[ResultRow]:
        # One evaluation each: the untrained networks are the runs' starting points, not trained again.
        baselines = [
            thumbnail_row(
                test_set,
                image_size,
                torch_device,
                command=(
                    f"vprdistill eval --model {THUMBNAIL_PRESET} --dataset {dataset_dir} --split test "
                    f"--image-size {budget.image_size}"
                ),
            )
        ]
        for model in DEMO_MODELS:
            size = (model.image_size(budget),) * 2
            baselines.append(
                untrained_row(configs[model.key], test_set, model.name, size, torch_device, input_kind=model.input_kind)
            )
        return baselines

    baselines = progress.run("baselines", evaluate_baselines)

    def report() -> tuple[Path, Path]:
        # The figures show the trained models and the parameter-free floor they must clear.
        floor = [row for row in baselines if row.kind == "baseline"]
        figures = {
            "recall_at_n": recall_curves([*rows, *floor]),
            "recall_per_condition": recall_per_condition([*rows, *floor]),
            "recall_vs_speed": recall_against_speed([*rows, *floor]),
        }
        # The sample grids show the best model a user could deploy: one that reads photos.
        rgb_models = [(m, r) for m, r in zip(DEMO_MODELS, rows) if m.key != SEG_BRANCH_KEY]
        best_model, best = max(rgb_models, key=lambda pair: pair[1].recall.get("1", 0.0))
        best_key = best_model.key
        grids = {}
        for condition in ("day", "night"):
            grid = retrieval_grid(
                runs / best_key,
                test_set,
                condition,
                image_size=(best_model.image_size(budget),) * 2,
                device=torch_device,
            )
            if grid is not None:
                grids[f"{condition} queries, {best.name}"] = grid
        meta = (
            f"{machine_line()}; {datetime.date.today().isoformat()}; budget: "
            f"{'quick' if quick else 'full'} ({budget.epochs} epochs over {budget.train_places} training places x "
            f"{budget.views_per_place} views, {budget.places_per_batch} places x {budget.views_per_batch} views "
            "per batch, "
            f"{budget.image_size}x{budget.image_size} px); "
            f"{test_set.num_queries} test queries against {test_set.num_database} database images; seed {seed}"
        )
        intro = (
            "Every model below was trained by `vprdistill demo` on the built-in SynthCity data and evaluated "
            "on its test split: database images by day, queries under changing time of day, weather and "
            "season. Recall@N counts a query as found when one of its top N database images lies within "
            "25 m. Intervals are 95 % percentile bootstrap intervals over the test queries (10,000 "
            "resamples)."
        )
        notes = [segmenter_note(segmenter)]
        return write_report(
            out_dir, "vprdistill demo report", intro, rows, figures, grids, meta, notes=notes, baselines=baselines
        )

    md_path, html_path = progress.run("report", report)
    results = dict(
        rows=[r.to_dict() for r in rows],
        baselines=[r.to_dict() for r in baselines],
        segmenter=segmenter,
        quick=quick,
        seed=seed,
    )
    atomic_write_json(out_dir / "results.json", results)
    total = progress.finish()
    print("\n" + text_table(summary_table(rows)))
    print("\nbaselines\n" + text_table(summary_table(baselines)))
    print(f"\nreport: {html_path}  (and {md_path}); total time {total / 60:.1f} min")
    return md_path, html_path, rows


def _train_segmenter(dataset_dir: Path, out: Path, budget: DemoBudget, seed: int, device) -> dict:
    """Train the demo's segmenter (or reuse a finished one); returns its ``segmenter_training.json`` record."""
    from vprdistill.train.segmenter import MARKER, SegmenterTrainingConfig, train_segmenter

    record = out / MARKER
    if not record.is_file():
        config = SegmenterTrainingConfig(
            epochs=budget.segmenter_epochs, image_size=budget.dataset_image_size, seed=seed
        )
        train_segmenter(dataset_dir, out, config, device=device, eval_split="test")
    return json.loads(record.read_text())


def _write_predicted_maps(dataset_dir: Path, segmenter_dir: Path, budget: DemoBudget, device) -> None:
    """The segmenter's maps of every place image and of the evaluated splits' photos (existing maps are kept)."""
    from vprdistill.data.segmenter import segment_dataset

    size = budget.dataset_image_size
    places = dataset_dir / PLACES_FOLDER
    segment_dataset(places, segmenter_dir, device=device, image_size=size, maps_dir=PREDICTED_PLACE_MAPS_DIR)
    segment_dataset(
        dataset_dir, segmenter_dir, splits=budget.segmented_splits, device=device, image_size=size,
        maps_dir=PREDICTED_MAPS_DIR,
    )  # fmt: skip


def segmenter_note(record: dict) -> str:
    """One report line: the segmenter's size, training images and mIoU on the test split, per query condition."""
    groups = (record.get("evaluation") or {}).get("groups", {})

    def miou(group: str) -> str:
        value = groups.get(group, {}).get("miou")
        return "-" if value is None else f"{100 * value:.1f}"

    conditions = sorted(name.split("/", 1)[1] for name in groups if name.startswith("queries/"))
    per_condition = ", ".join(f"{c} {miou('queries/' + c)}" for c in conditions)
    return (
        f"Segmenter (SegFormer, {record.get('parameters', 0) / 1e6:.2f} M parameters, {record.get('images', 0)} day "
        f"images of the train split, {record.get('config', {}).get('epochs', '?')} epochs): mIoU (%) on the test "
        f"split's database {miou('database')}, queries {miou('queries')}; per query condition: {per_condition}. "
        "The seg-branch learns from and is tested on these maps, not on SynthCity's ground truth."
    )
