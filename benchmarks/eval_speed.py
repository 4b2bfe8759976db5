"""Milliseconds per query of exact search against a 10,000 × 2048 database.

Compares, in one run and on the same data, ``vprdistill.retrieval.exact_search``
(NumPy's BLAS), the oneDNN product of ``benchmarks/_search_helpers.py`` (a
private torch operator the package does not use), faiss ``IndexFlatIP`` and a
plain NumPy full sort,
for a batch of queries and for single queries, checks that they return the
same neighbours and writes the ``eval-speed`` section of BENCHMARKS.md.

    python benchmarks/eval_speed.py [--database 10000] [--dim 2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._search_helpers import ONEDNN_MIN_QUERIES, onednn_available, onednn_search  # noqa: E402
from benchmarks.report_sections import machine_description, today, update_section  # noqa: E402
from vprdistill.retrieval.search import exact_search  # noqa: E402
from vprdistill.utils.device import set_threads  # noqa: E402


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    array = rng.standard_normal((rows, dim), dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def numpy_full_sort(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The naive baseline: score every database entry, sort all of them."""
    return np.argsort(-(queries @ database.T), axis=1, kind="stable")[:, :k]


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def single_query_loop(search: Callable[[np.ndarray], object], queries: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        for row in range(len(queries)):
            search(queries[row : row + 1])

    return run


def blas_threads() -> str:
    """Thread count of each BLAS/OpenMP library loaded (NumPy's OpenBLAS, faiss's, torch's)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    return ", ".join(f"{Path(i['filepath']).name.split('-')[0]} {i['num_threads']}" for i in threadpool_info())


def agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Share of (query, rank) slots holding the same database index."""
    return float((reference == other).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--database", type=int, default=10_000, help="database size N")
    parser.add_argument("--dim", type=int, default=2048, help="descriptor dimension D")
    parser.add_argument("--batch-queries", type=int, default=1000, help="queries searched at once (batched)")
    parser.add_argument("--single-queries", type=int, default=200, help="queries searched one at a time")
    parser.add_argument("--k", type=int, default=20, help="neighbours per query")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and faiss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.threads:
        # NumPy's BLAS ignores torch's setting; give every library the same number of threads.
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    import faiss

    rng = np.random.default_rng(args.seed)
    database = unit_rows(rng, args.database, args.dim)
    queries = unit_rows(rng, max(args.batch_queries, args.single_queries), args.dim)
    batch, singles = queries[: args.batch_queries], queries[: args.single_queries]
    k = args.k

    faiss_index = faiss.IndexFlatIP(args.dim)
    faiss_index.add(database)
    onednn = onednn_search(database)

    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "vprdistill exact_search() (matmul, NumPy BLAS)": lambda q: exact_search(database, q, k)[1],
        "oneDNN product (benchmarks/_search_helpers.py)": lambda q: onednn(q, k)[1],
        "faiss IndexFlatIP": lambda q: faiss_index.search(q, k)[1],
        "numpy argsort (full sort)": lambda q: numpy_full_sort(database, q, k),
    }
    reference = faiss_index.search(batch, k)[1]
    agreements = {}
    for name, search in methods.items():
        search(batch[:8])  # warm-up: thread pools, page faults
        agreements[name] = agreement(reference, search(batch))
    # Methods take turns within each repetition, so a change of load on a shared
    # machine hits all of them alike; the best of the repetitions is kept.
    batched_s = {name: [] for name in methods}
    single_s = {name: [] for name in methods}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, search in methods.items():
            batched_s[name].append(seconds(lambda search=search: search(batch)))
            single_s[name].append(seconds(single_query_loop(search, singles)))
    load_after = os.getloadavg()[0]
    rows = []
    for name in methods:
        batched = 1e3 * min(batched_s[name]) / len(batch)
        single = 1e3 * min(single_s[name]) / len(singles)
        rows.append((name, batched, single, agreements[name]))
        print(
            f"{name:40s} batched {batched:8.3f} ms/query   single {single:8.3f} ms/query   "
            f"agreement {agreements[name]:.4f}"
        )

    faiss_batched, faiss_single = next((b, s) for n, b, s, _ in rows if n.startswith("faiss"))
    table = [
        "| method | batched ms/query | vs faiss | single ms/query | vs faiss | top-k agreement with faiss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, batched, single, agree in rows:
        table.append(
            f"| {name} | {batched:.3f} | {faiss_batched / batched:.2f}× | {single:.3f} | "
            f"{faiss_single / single:.2f}× | {100 * agree:.2f}% |"
        )
    command = "python benchmarks/eval_speed.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    body = "\n".join(
        [
            "## eval-speed: exact search, ms per query",
            "",
            f"- Machine: {machine_description()}; faiss {faiss.__version__}, faiss threads {faiss.omp_get_max_threads()}",
            f"- Date: {today()}",
            f"- Database {args.database:,} × {args.dim} random L2-normalised float32 (seed {args.seed}), top-{k}; "
            f"batched = {args.batch_queries} queries in one call, single = a loop of {args.single_queries} one-query calls; "
            f"methods take turns, best of {args.repeats} runs; threads: {blas_threads()}; "
            f"load average {load_before:.1f} before, {load_after:.1f} after (2-core machine shared with other work).",
            "- 'vs faiss' = faiss time / method time (above 1 is faster than faiss). Agreement below 100% comes from "
            "float32 rounding of near-tied scores.",
            f"- The oneDNN row computes blocks of at least {ONEDNN_MIN_QUERIES} queries with oneDNN "
            f"(available here: {'yes' if onednn_available() else 'no'}) and smaller ones, single queries included, "
            "with NumPy's BLAS, as `exact_search` does throughout; faiss and NumPy bring their own OpenBLAS builds.",
            f"- Command: `{command.strip()}`",
            "",
            *table,
        ]
    )
    print(body)
    if not args.no_write:
        print(f"updated {update_section('eval-speed', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
