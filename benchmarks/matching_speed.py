"""Milliseconds per query of matching against a 10,000 × 2048 database: exact and compact modes.

Times, in one run and on the same data: our exact path
(``vprdistill.retrieval.search.exact_search``) and faiss ``IndexFlatIP``, each
batched and one query at a time, then the compact modes a map index offers
(PCA 256/128 float32, float16, int8, and combinations) through the very
faiss index (``MatchingMode.build``) a map index searches with. Methods take turns within each
repetition so that load changes on a shared machine hit all alike; the best
repetition is kept.

Recall cost of the compact modes: with ``--dataset PATH --model M`` on real
descriptors of that dataset (recall@N against exact search, and Recall@N by
GPS); otherwise on route-like synthetic descriptors (``structured_descriptors``:
a low-rank place factor correlated along a route plus appearance noise), where
recall@N = share of queries whose exact nearest neighbour is in the mode's top N.
Uniform random vectors, used for timing, carry no neighbour structure to lose.

Acceptance: the exact path is at least as fast as ``IndexFlatIP`` batched and
single-query, and some compact mode answers one query in under 0.6 ms.

    python benchmarks/matching_speed.py [--database 10000] [--dim 2048] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._search_helpers import structured_descriptors  # noqa: E402
from benchmarks.report_sections import machine_description, today, update_section  # noqa: E402
from vprdistill.deploy.matching_bench import COMPACT_MODES, EXACT_MODE, applicable_modes, random_unit_rows  # noqa: E402
from vprdistill.retrieval.approximate import recall_against_exact  # noqa: E402
from vprdistill.retrieval.approximate import search as search_index  # noqa: E402
from vprdistill.retrieval.search import exact_search  # noqa: E402
from vprdistill.utils.device import set_threads  # noqa: E402

SINGLE_QUERY_TARGET_MS = 0.6


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _one_at_a_time(search: Callable[[np.ndarray], object], queries: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        for row in range(len(queries)):
            search(queries[row : row + 1])

    return run


def time_methods(
    methods: dict[str, Callable[[np.ndarray], object]], batch: np.ndarray, singles: np.ndarray, repeats: int
) -> dict[str, dict[str, float]]:
    """ms per query of each method, batched and single, methods taking turns within each repetition."""
    for search in methods.values():
        search(batch[:8])  # warm-up: thread pools, page faults
    batched = {name: [] for name in methods}
    single = {name: [] for name in methods}
    for _ in range(repeats):
        for name, search in methods.items():
            batched[name].append(_seconds(lambda search=search: search(batch)))
            single[name].append(_seconds(_one_at_a_time(search, singles)))
    return {
        name: {"batched": 1e3 * min(batched[name]) / len(batch), "single": 1e3 * min(single[name]) / len(singles)}
        for name in methods
    }


def real_descriptors(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Database and query descriptors of a dataset split with a model, and each query's GPS positives."""
    from vprdistill.cli.common import load_model_or_preset, run_settings
    from vprdistill.data.readers import open_dataset
    from vprdistill.deploy.model_io import pick_image_size
    from vprdistill.eval.extract import compute_descriptors

    model = load_model_or_preset(args.model, "cpu")
    size = pick_image_size(args.image_size, run_settings(args.model), model)
    dataset = open_dataset(args.dataset, split=args.split)
    database = compute_descriptors(model, dataset.database_paths, size, desc="database")
    queries = compute_descriptors(model, dataset.query_paths, size, desc="queries")
    return database, queries, dataset.positives(25.0)


def gps_recall(found: np.ndarray, positives: list[np.ndarray], ns: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Recall@N by position (25 m), over the queries that have a positive."""
    from vprdistill.eval.recall import recall_at_n

    recalls, _ = recall_at_n(found, positives, list(ns))
    return {f"gps_recall@{n}": float(value) for n, value in recalls.items()}


def recall_rows(args: argparse.Namespace, modes: list) -> tuple[str, list[dict]]:
    """Recall cost of each compact mode, on real descriptors when a dataset is given, else synthetic ones."""
    if args.dataset is not None:
        database, queries, positives = real_descriptors(args)
        setting = f"real descriptors of {args.dataset} ({args.split}) with {args.model}"
    else:
        rng = np.random.default_rng(args.seed + 1)
        database, queries = structured_descriptors(rng, args.database, 1000, args.dim)
        positives = None
        setting = (f"route-like synthetic descriptors ({args.database:,} × {args.dim}, 1,000 queries; "
                   "128-d place factor, correlation 0.9 between neighbouring places, appearance noise)")  # fmt: skip
    _, exact = exact_search(database, queries, 10)
    rows = []
    for mode in [EXACT_MODE, *[m for m in modes if m.pca_dim is None or m.pca_dim <= len(database)]]:
        _, found = search_index(mode.build(database), queries, 10)
        row = {"mode": mode.name, **{f"recall@{n}_vs_exact": r for n, r in recall_against_exact(found, exact).items()}}
        if positives is not None:
            row.update(gps_recall(found, positives))
        rows.append(row)
    return setting, rows


def timing_table(timings: dict, stored: dict, recall_by_mode: dict, num_database: int) -> list[str]:
    """Markdown rows: storage, ms per query batched and single, ratios to faiss, recall against exact."""
    bytes_per = {"float32": 4, "float16": 2, "int8": 1}
    ref = timings["faiss IndexFlatIP"]
    table = ["| method | stored | MB | batched ms/query | vs faiss | single ms/query | vs faiss | recall@1 / @10 vs exact |",
             "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for name, t in timings.items():
        mode_name = name.removeprefix("compact ") if name.startswith("compact") else EXACT_MODE.name
        dim, dtype = stored[mode_name]
        recall = recall_by_mode.get(mode_name, {})
        recall_text = f"{recall['recall@1_vs_exact']:.3f} / {recall['recall@10_vs_exact']:.3f}" if recall else "–"
        if "gps_recall@1" in recall:
            recall_text += f" (GPS R@1 {recall['gps_recall@1']:.3f})"
        table.append(
            f"| {name} | {dim}-d {dtype} | {num_database * dim * bytes_per[dtype] / 1e6:.1f} | {t['batched']:.4f} | "
            f"{ref['batched'] / t['batched']:.2f}× | {t['single']:.4f} | {ref['single'] / t['single']:.2f}× | {recall_text} |"
        )
    return table


def acceptance(timings: dict) -> dict[str, bool]:
    ours, ref = timings["exact_search (ours)"], timings["faiss IndexFlatIP"]
    fastest = min(t["single"] for name, t in timings.items() if name.startswith("compact"))
    return {
        "exact path at least as fast as IndexFlatIP, batched": ours["batched"] <= ref["batched"],
        "exact path at least as fast as IndexFlatIP, single query": ours["single"] <= ref["single"],
        f"a compact mode answers one query in under {SINGLE_QUERY_TARGET_MS} ms": fastest < SINGLE_QUERY_TARGET_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", type=int, default=10_000, help="database size N")
    parser.add_argument("--dim", type=int, default=2048, help="descriptor dimension D")
    parser.add_argument("--batch-queries", type=int, default=1000, help="queries searched at once (batched)")
    parser.add_argument("--single-queries", type=int, default=100, help="queries searched one at a time")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (best kept)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts to time with (NumPy's BLAS, torch and faiss alike)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dataset", type=Path, default=None, help="measure recall cost on real descriptors of this dataset"
    )
    parser.add_argument("--model", default=None, help="model for --dataset (run folder, checkpoint or preset)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--image-size", type=int, nargs="+", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    if (args.dataset is None) != (args.model is None):
        parser.error("--dataset and --model go together")
    if min(args.threads) < 1:
        parser.error("--threads takes positive counts")
    import faiss
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(args.seed)
    database = random_unit_rows(rng, args.database, args.dim)
    queries = random_unit_rows(rng, max(args.batch_queries, args.single_queries), args.dim)
    batch, singles, k = queries[: args.batch_queries], queries[: args.single_queries], args.k
    faiss_index = faiss.IndexFlatIP(args.dim)
    faiss_index.add(database)
    modes = applicable_modes(args.dim, COMPACT_MODES)
    searchers = {m.name: m.build(database) for m in modes}
    methods: dict[str, Callable[[np.ndarray], object]] = {
        "exact_search (ours)": lambda q: exact_search(database, q, k),
        "faiss IndexFlatIP": lambda q: faiss_index.search(q, k),
        **{
            f"compact {name}": (lambda s: lambda q: search_index(s, q, k))(searcher)
            for name, searcher in searchers.items()
        },
    }
    timings_by_threads, loads = {}, {}
    for threads in args.threads:
        set_threads(threads)
        with threadpool_limits(threads):  # NumPy's BLAS ignores torch's setting
            before = os.getloadavg()[0]
            timings_by_threads[threads] = time_methods(methods, batch, singles, args.repeats)
            loads[threads] = (before, os.getloadavg()[0])
        for name, t in timings_by_threads[threads].items():
            print(
                f"{threads} thread(s) {name:34s} batched {t['batched']:8.4f} ms/query   single {t['single']:8.4f} ms/query"
            )

    setting, recalls = recall_rows(args, modes)
    recall_by_mode = {row["mode"]: row for row in recalls}
    stored = {m.name: (m.pca_dim or args.dim, m.dtype) for m in [EXACT_MODE, *modes]}
    command = "python benchmarks/matching_speed.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    lines = [
        "## matching-speed: exact and compact matching, ms per query",
        "",
        f"- Machine: {machine_description().split(', torch')[0]}; faiss {faiss.__version__}",
        f"- Date: {today()}. A 2-core machine shared with other work (load averages below): absolute figures "
        "are pessimistic, ratios within one table are fair.",
        f"- Timing data: database {args.database:,} × {args.dim} random L2-normalised float32 (seed {args.seed}), "
        f"top-{k}; batched = {args.batch_queries} queries in one call, single = a loop of {args.single_queries} "
        f"one-query calls; best of {args.repeats}, methods taking turns. Compact modes include projecting the "
        "query (PCA) and are the faiss index (`MatchingMode.build`) a map index searches with. Threads: NumPy's BLAS, torch and "
        "faiss all set to the count of each table.",
        f"- Recall columns: {setting}; recall@N = share of queries whose exact nearest neighbour is in the mode's top N.",
        f"- Command: `{command.strip()}`",
    ]
    checks_by_threads = {}
    for threads, timings in timings_by_threads.items():
        checks_by_threads[threads] = checks = acceptance(timings)
        fastest = min((t["single"], name) for name, t in timings.items() if name.startswith("compact"))
        lines += [
            "",
            f"### {threads} thread{'s' if threads > 1 else ''} (load average {loads[threads][0]:.1f} before, {loads[threads][1]:.1f} after)",
            "",
            *timing_table(timings, stored, recall_by_mode, args.database),
            "",
            *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()],
            f"- Fastest single query among compact modes: {fastest[1]} at {fastest[0]:.3f} ms.",
        ]
    body = "\n".join(lines)
    print(body)
    if args.json is not None:
        args.json.write_text(
            json.dumps({"timings": timings_by_threads, "recall": recalls, "checks": checks_by_threads}, indent=2)
        )
    if not args.no_write:
        print(f"updated {update_section('matching-speed', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
