"""Write a SynthCity dataset to disk: images, class maps, place set, contact sheet, manifest.

The manifest ``dataset.json`` is written last and atomically, so its presence
means the dataset is complete; a folder with a matching manifest is reused as
it is. Each image is a pure function of its spec, so the output does not
depend on the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from vprdistill.data.filenames import FIELDS
from vprdistill.data.synth.classes import RENDERED_CLASS_IDS, class_list
from vprdistill.data.synth.conditions import SEASONS, TIMES, WEATHERS, parse_condition
from vprdistill.data.synth.config import SPLITS, SynthConfig
from vprdistill.data.synth.contact_sheet import make_contact_sheet, pick_samples
from vprdistill.data.synth.places import CITY, CSV_COLUMNS, PLACES_ROOT, PlaceViewSpec, places_csv_text, plan_places
from vprdistill.data.synth.render import render_view
from vprdistill.data.synth.traversal import KINDS, ImageSpec, plan_dataset
from vprdistill.data.synth.world import UTM_ORIGIN, UTM_ZONE_LETTER, UTM_ZONE_NUMBER, World, build_world
from vprdistill.utils.atomic import atomic_write_json, atomic_write_text
from vprdistill.utils.logging import get_logger

GENERATOR = "synthcity"
VERSION = "1.0.0"
MANIFEST = "dataset.json"
CONTACT_SHEET = "contact_sheet.png"
IN_PROGRESS = ".synthcity-in-progress"
OWNED = ("images", "segmentation", PLACES_ROOT, CONTACT_SHEET, MANIFEST)
PLACES_CSV = Path(PLACES_ROOT, "Dataframes", f"{CITY}.csv")
CHUNK = 16

log = get_logger("data.synth")
_worker: dict = {}


def generate(
    out_dir: str | os.PathLike,
    preset: str = "small",
    seed: int = 0,
    image_size: int = 128,
    conditions: list[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    **overrides,
) -> Path:
    """Generate (or reuse) a SynthCity dataset in ``out_dir`` and return its path.

    ``conditions`` is the query mix (``'night-rain-winter'``, ``'fog'``, ...;
    default: the preset's); ``overrides`` are any other ``SynthConfig`` fields
    (``spacing_m=8``, ``queries_test=100``, ``train_places=500``, ...); with
    ``train_places > 0`` a place set in the GSV-Cities layout is written to
    ``out_dir/places`` (see ``places.py``). ``workers`` defaults to the
    CPU count. Raises ``ValueError`` naming the bad argument or folder.
    """
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers: must be an integer >= 1, got {workers!r}")
    if conditions is not None:
        overrides["query_conditions"] = conditions
    config = SynthConfig.from_preset(preset, seed=seed, image_size=image_size, **overrides)
    out = Path(out_dir)
    world = build_world(config)
    plan = plan_dataset(world, config)
    places = plan_places(world, config)
    manifest = build_manifest(config, plan)
    _claim_folder(out)
    if _is_complete(out, manifest):
        log.info("%s already holds this SynthCity dataset; reusing it", out)
        return out
    for name in OWNED:
        _remove(out / name)
    (out / IN_PROGRESS).write_text("SynthCity is writing this folder; an interrupted run leaves this file behind.\n")

    specs = [spec for split in SPLITS for kind in KINDS for spec in plan[split][kind]]
    for split in SPLITS:
        for kind in KINDS:
            (out / "images" / split / kind).mkdir(parents=True, exist_ok=True)
            (out / "segmentation" / split / kind).mkdir(parents=True, exist_ok=True)
    if places:
        for folder in (
            out / PLACES_ROOT / "Images" / CITY,
            out / PLACES_ROOT / "Segmentation" / CITY,
            (out / PLACES_CSV).parent,
        ):
            folder.mkdir(parents=True, exist_ok=True)
    _render_all(world, config, [*specs, *places], out, workers or os.cpu_count() or 1, progress)
    if places:
        atomic_write_text(out / PLACES_CSV, places_csv_text(world, places))

    test = plan["test"]
    samples = pick_samples(test["database"], test["queries"])
    items = [
        (out / s.image_path(world), out / s.seg_path(world), ("db: " if s.kind == "database" else "") + s.condition)
        for s in samples
    ]
    make_contact_sheet(items, out / CONTACT_SHEET, cell=max(config.image_size, 128))
    atomic_write_json(out / MANIFEST, manifest)
    (out / IN_PROGRESS).unlink()
    return out


def build_manifest(config: SynthConfig, plan: dict[str, dict[str, list[ImageSpec]]]) -> dict:
    """The JSON description of a dataset; identical parameters give an identical manifest."""
    classes = class_list()
    manifest = {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": config.seed,
        "params": config.to_json(),
        "image_size": [config.image_size, config.image_size],
        "utm": {
            "zone_number": UTM_ZONE_NUMBER,
            "zone_letter": UTM_ZONE_LETTER,
            "origin_east": UTM_ORIGIN[0],
            "origin_north": UTM_ORIGIN[1],
        },
        "splits": {split: {kind: len(plan[split][kind]) for kind in KINDS} for split in SPLITS},
        "conditions": {
            "database": config.database_condition,
            "queries": list(config.query_conditions),
            "valid": {"time": list(TIMES), "weather": list(WEATHERS), "season": list(SEASONS)},
        },
        "classes": classes,
        "palette": {str(c["id"]): c["color"] for c in classes},
        "rendered_class_ids": list(RENDERED_CLASS_IDS),
        "segmentation": {
            "root": "segmentation",
            "format": "single-channel PNG, uint8 Cityscapes trainId, 255 = void",
            "layout": "segmentation/<split>/<database|queries>/<image stem>.png",
        },
        "file_name_fields": list(FIELDS),
        "note_format": "<time>-<weather>-<season>",
    }
    # Only with places, so that the manifest of a dataset without them is as it always was.
    if config.train_places > 0:
        manifest["places"] = {
            "count": config.train_places,
            "views": config.views_per_place,
            "images": config.train_places * config.views_per_place,
            "conditions": list(config.place_condition_list()),
            "split": "train",
            "root": PLACES_ROOT,
            "layout": {
                "format": "GSV-Cities",
                "dataframe": PLACES_CSV.as_posix(),
                "columns": list(CSV_COLUMNS),
                "images": f"{PLACES_ROOT}/Images/{CITY}/{CITY}_<place_id % 10**5, 7 digits>_<year>_<month, 2 digits>_"
                "<northdeg, 3 digits>_<lat>_<lon>_<panoid>.jpg",
                "segmentation": f"{PLACES_ROOT}/Segmentation/{CITY}/<image stem>.png",
            },
        }
    return manifest


def _claim_folder(out: Path) -> None:
    """Create ``out`` or make sure it is ours to write; refuse folders holding someone else's images."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"out_dir: cannot create output folder {out}: {error}") from error
    if not out.is_dir():
        raise ValueError(f"out_dir: {out} exists and is not a folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"out_dir: output folder {out} is not writable")
    ours = (out / IN_PROGRESS).exists() or _read_manifest(out).get("generator") == GENERATOR
    if not ours and any((out / name).exists() for name in ("images", "segmentation", PLACES_ROOT)):
        raise ValueError(
            f"out_dir: {out} already holds images/, segmentation/ or {PLACES_ROOT}/ not written by SynthCity; "
            "choose an empty folder"
        )


def _read_manifest(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _is_complete(out: Path, manifest: dict) -> bool:
    if (out / IN_PROGRESS).exists() or _read_manifest(out) != manifest:
        return False
    # (folder, suffix, number of files it must hold): images and class maps of every traversal and of the places.
    expected = [
        (out / root / split / kind, suffix, count)
        for split, kinds in manifest["splits"].items()
        for kind, count in kinds.items()
        for root, suffix in (("images", ".jpg"), ("segmentation", ".png"))
    ]
    places = manifest.get("places")
    if places:
        if not (out / PLACES_CSV).is_file():
            return False
        expected += [(out / PLACES_ROOT / "Images" / CITY, ".jpg", places["images"])]
        expected += [(out / PLACES_ROOT / "Segmentation" / CITY, ".png", places["images"])]
    for folder, suffix, count in expected:
        if not folder.is_dir() or sum(1 for p in os.scandir(folder) if p.name.endswith(suffix)) != count:
            return False
    return (out / CONTACT_SHEET).exists()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _init_worker(world: World, config: SynthConfig, out: str) -> None:
    _worker.update(world=world, config=config, out=Path(out))


def _render_chunk(specs: list[ImageSpec | PlaceViewSpec]) -> int:
    world, config, out = _worker["world"], _worker["config"], _worker["out"]
    for spec in specs:
        rgb, seg = render_view(
            world,
            spec.view,
            config.image_size,
            config.fov_deg,
            parse_condition(spec.condition),
            spec.seed,
            spec.traversal_seed,
        )
        Image.fromarray(rgb).save(out / spec.image_path(world), format="JPEG", quality=config.jpeg_quality)
        Image.fromarray(seg).save(out / spec.seg_path(world), format="PNG")
    return len(specs)


def _render_all(
    world: World, config: SynthConfig, specs: list[ImageSpec | PlaceViewSpec], out: Path, workers: int, progress: bool
) -> None:
    chunks = [specs[i : i + CHUNK] for i in range(0, len(specs), CHUNK)]
    with tqdm(total=len(specs), desc="SynthCity", unit="img", disable=not progress) as bar:
        if workers == 1:
            _init_worker(world, config, str(out))
            for chunk in chunks:
                bar.update(_render_chunk(chunk))
            return
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(world, config, str(out))) as pool:
            for done in pool.imap_unordered(_render_chunk, chunks):
                bar.update(done)
