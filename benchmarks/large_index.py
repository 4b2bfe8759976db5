"""Large-map indexes on 1,000,000 synthetic descriptors: build time, memory, query time, recall against exact.

The database is a mixture of Gaussians: ``num / 100`` "places" (independent
random unit centres, or along random-walk routes with ``--layout routes``),
about 100 views of each (noise of norm ≈ ``spread``), L2-normalised, fixed seed;
queries are database rows perturbed by noise of norm ≈ ``query_noise``.
Every index is built with ``vprdistill.retrieval.approximate.build_index`` and
its recall@1/@10 is the share of queries whose exact top-1 (from
``retrieval.search.exact_search``) it returns in its top 1/10. Writes the
``large-index`` section of BENCHMARKS.md.

256-d is the default: a 2048-d model descriptor PCA-reduced to 256 is the
realistic deployment (4 KiB → 1 KiB per image before any compression), and
1M × 256 float32 (1 GiB) fits a small machine several times over.

    python benchmarks/large_index.py [--num 1000000] [--dim 256] [--threads 2]
    python benchmarks/large_index.py --num 100000 --no-write     # a quick run
    python benchmarks/large_index.py --dim 2048                  # ~3× 8 GiB of RAM at the peak
"""

from __future__ import annotations

import argparse
import gc
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._search_helpers import index_memory_bytes, set_search_params  # noqa: E402
from benchmarks.report_sections import machine_description, today, update_section  # noqa: E402
from vprdistill.retrieval.approximate import (  # noqa: E402
    build_index,
    default_m_pq,
    default_nlist,
    recall_against_exact,
    search_reranked,
)
from vprdistill.retrieval.search import exact_search  # noqa: E402
from vprdistill.utils.device import set_threads  # noqa: E402

_GENERATION_CHUNK = 100_000
_PLACES_PER_ROUTE = 100
_ROUTE_STEP = 0.3  # noise norm of one step along a route


def place_centres(num_places: int, dim: int, layout: str, rng: np.random.Generator) -> np.ndarray:
    """``(num_places, dim)`` unit place centres.

    ``blobs``: independent random centres, i.e. isolated clusters (the hard
    case for graph indexes). ``routes``: random walks of 100 places on the
    sphere, each step keeping a cosine of ~0.96 with the last place, like
    images taken along streets (neighbouring places look alike).
    """
    steps = rng.standard_normal((num_places, dim), dtype=np.float32)
    if layout == "routes":
        steps *= np.float32(_ROUTE_STEP / np.sqrt(dim))
        for place in range(num_places):
            if place % _PLACES_PER_ROUTE:  # the first place of a route is a random start
                steps[place] += steps[place - 1]
            steps[place] /= np.linalg.norm(steps[place])
        return steps
    return steps / np.linalg.norm(steps, axis=1, keepdims=True)


def clustered_descriptors(num: int, dim: int, spread: float, layout: str, seed: int) -> np.ndarray:
    """``(num, dim)`` float32 unit rows: ~100 views around each of ``num // 100`` place centres."""
    rng = np.random.default_rng(seed)
    num_places = max(1, num // 100)
    centres = place_centres(num_places, dim, layout, rng)
    out = np.empty((num, dim), dtype=np.float32)
    for start in range(0, num, _GENERATION_CHUNK):
        stop = min(start + _GENERATION_CHUNK, num)
        rows = centres[rng.integers(0, num_places, stop - start)]
        rows += rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def perturbed_queries(database: np.ndarray, count: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` database rows plus noise of norm ≈ ``noise``, L2-normalised; and the rows they came from."""
    rng = np.random.default_rng(seed + 1)
    sources = rng.choice(len(database), size=count, replace=False)
    dim = database.shape[1]
    queries = database[sources] + rng.standard_normal((count, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32), sources


def timed(run: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def batched_ms(search: Callable[[np.ndarray], object], queries: np.ndarray, repeats: int) -> float:
    """Milliseconds per query with all ``queries`` in one call, best of ``repeats`` (the least noisy estimate)."""
    search(queries[:8])  # warm-up: thread pools, page faults
    return 1e3 * min(timed(lambda: search(queries))[1] for _ in range(repeats)) / len(queries)


def ms_per_query(
    search: Callable[[np.ndarray], object], queries: np.ndarray, single: int, repeats: int
) -> tuple[float, float]:
    """(batched, single-query) milliseconds per query, each best of ``repeats``."""
    batched = batched_ms(search, queries, repeats)

    def one_at_a_time() -> None:
        for row in range(single):
            search(queries[row : row + 1])

    single_seconds = min(timed(one_at_a_time)[1] for _ in range(repeats)) / single
    return batched, 1e3 * single_seconds


def fmt_bytes(count: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f} B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num", type=int, default=1_000_000, help="database descriptors N")
    parser.add_argument("--dim", type=int, default=256, help="descriptor dimension D")
    parser.add_argument("--queries", type=int, default=1000, help="queries (batched search and recall)")
    parser.add_argument("--single-queries", type=int, default=100, help="queries timed one call at a time")
    parser.add_argument("--layout", choices=("blobs", "routes"), default="blobs", help="how place centres lie")
    parser.add_argument("--spread", type=float, default=0.5, help="noise norm of a view around its place centre")
    parser.add_argument("--query-noise", type=float, default=0.35, help="noise norm of a query around its source row")
    parser.add_argument("--kinds", default="flat,ivfpq,hnsw", help="comma-separated index kinds")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF-PQ cells scanned per query")
    parser.add_argument("--ef-search", type=int, default=64, help="HNSW candidates explored per query")
    parser.add_argument("--sweep-nprobe", type=int, nargs="*", default=[4, 64], help="other nprobe values timed")
    parser.add_argument("--sweep-ef-search", type=int, nargs="*", default=[16, 256, 1024], help="ef_search values")
    parser.add_argument(
        "--ef-construction",
        type=int,
        default=40,
        help="HNSW build candidates; 40 (not build_index's 80) halves the longest step of the run",
    )
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node")
    parser.add_argument("--shortlist", type=int, default=100, help="IVF-PQ candidates re-ranked exactly")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for faiss and torch (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    import faiss

    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    k = 10
    database, generate_seconds = timed(
        lambda: clustered_descriptors(args.num, args.dim, args.spread, args.layout, args.seed)
    )
    queries, sources = perturbed_queries(database, args.queries, args.query_noise, args.seed)
    (exact_scores, exact), exact_seconds = timed(lambda: exact_search(database, queries, k))
    gap = float(np.median(exact_scores[:, 0] - exact_scores[:, 1]))
    print(
        f"data {args.num:,} × {args.dim} in {generate_seconds:.1f} s; exact search of {args.queries} queries "
        f"{exact_seconds:.1f} s; source row is the exact top-1 for {100 * (exact[:, 0] == sources).mean():.1f}%; "
        f"median top-1/top-2 score gap {gap:.3f}"
    )

    rows: list[tuple[str, float, int, float, float, dict[int, float]]] = []
    sweep: list[tuple[str, float, dict[int, float]]] = []
    for kind in kinds:
        options = {"nprobe": args.nprobe} if kind == "ivfpq" else {}
        if kind == "hnsw":
            options = {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "ef_search": args.ef_search}
        index, build_seconds = timed(
            lambda kind=kind, options=options: build_index(database, kind, seed=args.seed, **options)
        )
        memory = index_memory_bytes(index)
        batched, single = ms_per_query(
            lambda q, index=index: index.search(q, k), queries, args.single_queries, args.repeats
        )
        recall = recall_against_exact(index.search(queries, 10)[1], exact)
        name = "flat (exact, faiss IndexFlatIP)"
        if kind == "ivfpq":
            name = f"IVF-PQ (nlist {index.nlist}, PQ{index.pq.M}x{index.pq.nbits}, nprobe {index.nprobe})"
        if kind == "hnsw":
            name = f"HNSW (M {args.hnsw_m}, efConstruction {args.ef_construction}, efSearch {args.ef_search})"
        rows.append((name, build_seconds, memory, batched, single, recall))
        print(f"{name}: build {build_seconds:.1f} s, {fmt_bytes(memory)}, {batched:.3f}/{single:.3f} ms, {recall}")

        if kind == "ivfpq":
            with tempfile.TemporaryDirectory() as folder:
                # The float32 rows live on disk; only the shortlisted ones are read.
                np.save(Path(folder) / "database.npy", database)
                on_disk = np.load(Path(folder) / "database.npy", mmap_mode="r")

                def rerank(q, index=index, on_disk=on_disk):
                    return search_reranked(index, q, k, on_disk, shortlist=args.shortlist)

                batched, single = ms_per_query(rerank, queries, args.single_queries, args.repeats)
                _, found = rerank(queries)
            recall = {cut: float((found[:, :cut] == exact[:, :1]).any(axis=1).mean()) for cut in (1, k)}
            rows.append(
                (
                    f"{name} + exact re-rank of top {args.shortlist} from a memmap",
                    build_seconds,
                    memory,
                    batched,
                    single,
                    recall,
                )
            )
            for nprobe in args.sweep_nprobe:
                set_search_params(index, nprobe=nprobe)
                speed = batched_ms(lambda q, index=index: index.search(q, k), queries, args.repeats)
                sweep.append(
                    (f"IVF-PQ nprobe {nprobe}", speed, recall_against_exact(index.search(queries, 10)[1], exact))
                )
        if kind == "hnsw":
            for ef in args.sweep_ef_search:
                set_search_params(index, ef_search=ef)
                speed = batched_ms(lambda q, index=index: index.search(q, k), queries, args.repeats)
                sweep.append((f"HNSW efSearch {ef}", speed, recall_against_exact(index.search(queries, 10)[1], exact)))
        del index
        gc.collect()

    per_million = 1e6 / args.num
    table = [
        "| index | build s | memory | per 1M descriptors | batched ms/query | single ms/query | recall@1 | recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, build_seconds, memory, batched, single, recall in rows:
        table.append(
            f"| {name} | {build_seconds:.1f} | {fmt_bytes(memory)} | {fmt_bytes(memory * per_million)} | "
            f"{batched:.3f} | {single:.3f} | {recall[1]:.3f} | {recall[k]:.3f} |"
        )
    sweep_table = ["| setting | batched ms/query | recall@1 | recall@10 |", "|---|---:|---:|---:|"]
    sweep_table += [f"| {name} | {ms:.3f} | {recall[1]:.3f} | {recall[k]:.3f} |" for name, ms, recall in sweep]
    command = "python benchmarks/large_index.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    body = "\n".join(
        [
            "## large-index: flat, IVF-PQ and HNSW on a large synthetic map",
            "",
            f"- Machine: {machine_description()}; faiss {faiss.__version__}, "
            f"faiss threads {faiss.omp_get_max_threads()}",
            f"- Date: {today()}",
            f"- Database {args.num:,} × {args.dim} float32 L2-normalised: {max(1, args.num // 100):,} Gaussian "
            f"clusters ('{args.layout}' layout, spread {args.spread}), seed {args.seed}; "
            f"{args.queries} queries = database rows + noise of "
            f"norm {args.query_noise} (the source row is the exact top-1 for "
            f"{100 * (exact[:, 0] == sources).mean():.1f}%, median top-1/top-2 score gap {gap:.3f}). "
            f"Data generated in {generate_seconds:.1f} s; exact search (`exact_search`, NumPy matmul) of all "
            f"queries took {exact_seconds:.1f} s.",
            f"- Recall@N = share of queries whose exact top-1 is in the index's top N. Batched = {args.queries} "
            f"queries in one call; single = a loop of {args.single_queries} one-query calls; best of "
            f"{args.repeats}. Memory = the serialised index (`faiss.serialize_index`); 'per 1M' scales it "
            f"linearly. IVF-PQ uses the defaults of `build_index` (nlist {default_nlist(args.num)} for N, "
            f"{default_m_pq(args.dim)}-byte codes for D, a random training sample of "
            f"{min(args.num, 131_072):,}).",
            "- The machine is shared: timings are noisy, compare rows as ratios within this run.",
            f"- Command: `{command.strip()}`",
            "",
            *table,
            "",
            "Search-time knobs on the same indexes (no rebuild):",
            "",
            *sweep_table,
        ]
    )
    print(body)
    if not args.no_write:
        print(f"updated {update_section('large-index', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
