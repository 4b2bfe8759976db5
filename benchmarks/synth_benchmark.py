"""SynthCity: rendering speed, the wall time of the ``small`` preset, and how hard it is.

Speed: images per second (RGB + class map, encoded and written) at 128×128 and
224×224 with the given workers, measured on the ``tiny`` preset, and the wall
and CPU time of generating the whole ``small`` preset at 128×128.

Difficulty: Recall@1/5 (25 m) per query condition on the ``small`` test split
of a naive baseline: 16×16 grayscale thumbnails matched by L2 nearest
neighbour. Cross-condition queries must fall clearly below same-condition ones,
and no condition may reach 90% R@1: otherwise the dataset cannot tell a good
model from a trivial one. Beside it, the same search on 16×16 ground-truth
class maps (an oracle) shows that the places stay tellable apart by structure.

    uv run python benchmarks/synth_benchmark.py --workers 2
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from PIL import Image
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report_sections import machine_description, today, update_section  # noqa: E402
from vprdistill.data.synth import generate, parse_file_name  # noqa: E402
from vprdistill.data.synth.classes import RENDERED_CLASS_IDS  # noqa: E402
from vprdistill.data.synth.writer import MANIFEST  # noqa: E402

RADIUS_M = 25.0


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_generation(out: Path, preset: str, image_size: int, workers: int) -> dict:
    """Generate a dataset from scratch; wall and CPU seconds and the number of images."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    generate(out, preset=preset, image_size=image_size, workers=workers, progress=False)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    images = sum(1 for _ in (out / "images").rglob("*.jpg"))
    return {"images": images, "wall_s": wall, "cpu_s": cpu, "images_per_s": images / wall}


def _thumbnails(paths: list[Path]) -> np.ndarray:
    """16×16 grayscale thumbnails as flat float32 vectors ``(N, 256)``."""
    out = np.empty((len(paths), 256), np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(image.convert("L").resize((16, 16), Image.BILINEAR), np.float32).ravel() / 255.0
    return out


def _class_map_thumbnails(paths: list[Path]) -> np.ndarray:
    """Share of each rendered class in each cell of a 16×16 grid: ``(N, C·256)``."""
    out = np.empty((len(paths), len(RENDERED_CLASS_IDS) * 256), np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as seg:
            ids = np.asarray(seg)
        h, w = ids.shape
        one_hot = (ids[None] == np.asarray(RENDERED_CLASS_IDS)[:, None, None]).astype(np.float32)
        out[i] = one_hot.reshape(len(RENDERED_CLASS_IDS), 16, h // 16, 16, w // 16).mean(axis=(2, 4)).ravel()
    return out


def baseline_recall(root: Path, split: str = "test", ns: tuple[int, ...] = (1, 5)) -> dict[str, dict[str, dict]]:
    """Recall@N (25 m) per query condition and overall, of exact L2 search on two naive descriptors.

    ``thumbnail``: 16×16 grayscale images (the naive appearance baseline).
    ``class map``: 16×16 class shares of the ground-truth maps, an oracle that
    shows how much place information survives every condition as structure.
    """
    db_images = sorted((root / "images" / split / "database").glob("*.jpg"))
    q_images = sorted((root / "images" / split / "queries").glob("*.jpg"))
    seg_of = lambda p: root / "segmentation" / split / p.parent.name / (p.stem + ".png")  # noqa: E731

    def utm(paths):
        return np.array([[float(parse_file_name(p)["east"]), float(parse_file_name(p)["north"])] for p in paths])  # noqa: E731

    notes = np.array([parse_file_name(p)["note"] for p in q_images])
    positives = cKDTree(utm(db_images)).query_ball_point(utm(q_images), RADIUS_M)
    results = {}
    for name, describe, db_files, q_files in (
        ("thumbnail", _thumbnails, db_images, q_images),
        ("class map", _class_map_thumbnails, [seg_of(p) for p in db_images], [seg_of(p) for p in q_images]),
    ):
        database = describe(db_files)
        index = faiss.IndexFlatL2(database.shape[1])
        index.add(database)
        _, predictions = index.search(describe(q_files), max(ns))
        hit = np.array([[bool(set(predictions[i, :n]) & set(positives[i])) for n in ns] for i in range(len(q_images))])
        per_condition = {}
        for condition in [*sorted(set(notes)), "all"]:
            rows = np.ones(len(notes), bool) if condition == "all" else notes == condition
            per_condition[condition] = {
                "queries": int(rows.sum()),
                **{f"R@{n}": 100.0 * hit[rows, k].mean() for k, n in enumerate(ns)},
            }
        results[name] = per_condition
    return results


def report(speed: dict[int, dict], small: dict, recall: dict[str, dict[str, dict]], workers: int, command: str) -> str:
    load = os.getloadavg()
    lines = [
        "## SynthCity generator",
        "",
        f"Machine: {machine_description()}. Date: {today()}. Workers: {workers} processes. Command: `{command}`.",
        "",
        f"Timings were taken on a shared machine (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "for 1 / 5 / 15 min while other work ran), so wall times are pessimistic; the CPU time is the "
        "machine-independent cost (wall time on idle cores ≈ CPU time / workers).",
        "",
        "| what | images | wall s | CPU s | images/s (wall) | CPU ms/image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for size, row in speed.items():
        lines.append(
            f"| `tiny` preset, {size}×{size}, RGB + class map | {row['images']} | {row['wall_s']:.1f} | "
            f"{row['cpu_s']:.1f} | {row['images_per_s']:.1f} | {1000 * row['cpu_s'] / row['images']:.1f} |"
        )
    lines.append(
        f"| **`small` preset**, 128×128, everything incl. contact sheet | {small['images']} | "
        f"**{small['wall_s']:.1f}** | {small['cpu_s']:.1f} | {small['images_per_s']:.1f} | "
        f"{1000 * small['cpu_s'] / small['images']:.1f} |"
    )
    lines += [
        "",
        "Naive baselines on the `small` test split (exact L2 nearest neighbour with faiss, positives within 25 m; "
        "database: day-clear-summer). *Thumbnail*: 16×16 grayscale images, the naive appearance baseline. "
        "*Class map*: 16×16 class shares of the ground-truth class maps, an oracle (no real system has them at "
        "query time) showing that places stay distinguishable by their structure under every condition.",
        "",
        "| query condition | queries | thumbnail R@1 | thumbnail R@5 | class map R@1 | class map R@5 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    thumbnail, class_map = recall["thumbnail"], recall["class map"]
    for condition, row in thumbnail.items():
        name = "**all**" if condition == "all" else condition
        other = class_map[condition]
        lines.append(
            f"| {name} | {row['queries']} | {row['R@1']:.1f} | {row['R@5']:.1f} | {other['R@1']:.1f} | {other['R@5']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes")
    parser.add_argument("--keep", type=Path, default=None, help="keep the small dataset in this folder")
    args = parser.parse_args(argv)
    command = "uv run python benchmarks/synth_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        speed = {size: timed_generation(tmp / f"tiny{size}", "tiny", size, args.workers) for size in (128, 224)}
        small_dir = args.keep or tmp / "small"
        if (small_dir / MANIFEST).exists():
            raise SystemExit(f"{small_dir} already holds a dataset; the wall time needs a fresh folder")
        small = timed_generation(small_dir, "small", 128, args.workers)
        recall = baseline_recall(small_dir)
    body = report(speed, small, recall, args.workers, command.strip())
    print(body)
    update_section("synthcity", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
