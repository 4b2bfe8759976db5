"""Why does triplet training not lift R@1 on SynthCity small? Descriptor statistics of one model.

For a run folder (or an untrained preset) and one split this prints, as JSON:

- R@1/5/10 (25 m, as ``vprdistill eval``) and R@1 per query condition;
- the mining view of the split: for each query the distance to its nearest
  positive within 10 m (``d_pos``) and to its nearest database image farther
  than 25 m (``d_neg``), their means, and the share of queries with
  ``d_neg < d_pos + margin`` for margins 0.1 and 0.3 (the queries a
  NetVLAD-style miner would not skip);
- descriptor collapse: the mean cosine between random database pairs and the
  effective rank (exp of the entropy of the normalised singular values).

Run on the training split it gives training R@1, to compare with test R@1
(overfitting), and shows whether the margin is already met.

    uv run --no-sync python benchmarks/training_diagnosis.py --model RUN --dataset /tmp/sc-small --split train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vprdistill.cli.common import load_model_or_preset
from vprdistill.data.readers import open_dataset_with_source
from vprdistill.eval.evaluate import default_image_size, evaluate_descriptors
from vprdistill.eval.extract import compute_descriptors


def mining_view(
    queries: np.ndarray,
    database: np.ndarray,
    positives: list[np.ndarray],
    non_negatives: list[np.ndarray],
) -> dict[str, float]:
    """Mean nearest-positive and nearest-negative distances, and the share of queries with a violating negative.

    Args:
        queries: (M, D) query descriptors.
        database: (N, D) database descriptors.
        positives: per query, database indices within the positive radius.
        non_negatives: per query, database indices within the negative radius.
    """
    d_pos, d_neg = [], []
    for q, pos in enumerate(positives):
        if len(pos) == 0:
            continue
        distances = np.linalg.norm(database - queries[q], axis=1)
        mask = np.ones(len(database), dtype=bool)
        mask[non_negatives[q]] = False
        d_pos.append(distances[pos].min())
        d_neg.append(distances[mask].min())
    d_pos_a, d_neg_a = np.array(d_pos), np.array(d_neg)
    out = {
        "queries_with_positive": len(d_pos_a),
        "mean_d_pos": float(d_pos_a.mean()),
        "mean_d_hardest_neg": float(d_neg_a.mean()),
        "share_pos_closer_than_all_negs": float((d_pos_a < d_neg_a).mean()),
    }
    for margin in (0.1, 0.3):
        out[f"share_violating_margin_{margin}"] = float((d_neg_a < d_pos_a + margin).mean())
    return out


def collapse(database: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean cosine of random database pairs and the effective rank of the (N, D) descriptors."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(database), size=(2, 2000))
    keep = a != b
    normed = database / np.linalg.norm(database, axis=1, keepdims=True)
    cosine = float((normed[a[keep]] * normed[b[keep]]).sum(1).mean())
    singular = np.linalg.svd(normed - normed.mean(0), compute_uv=False)
    p = singular / singular.sum()
    effective_rank = float(np.exp(-(p * np.log(p + 1e-12)).sum()))
    return {
        "mean_random_pair_cosine": cosine,
        "effective_rank": effective_rank,
        "dim": int(database.shape[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder, checkpoint or preset")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model_or_preset(args.model, "cpu")
    size = (args.image_size, args.image_size) if args.image_size else default_image_size(model)
    dataset, _ = open_dataset_with_source(args.dataset, split=args.split)
    database = compute_descriptors(model, dataset.database_paths, size, progress=False)
    queries = compute_descriptors(model, dataset.query_paths, size, progress=False)
    result = evaluate_descriptors(database, queries, dataset, threshold_m=25.0, recall_ns=(1, 5, 10))
    report = {
        "model": args.model,
        "split": args.split,
        "image_size": list(size),
        "recall": {str(k): float(v) for k, v in result.recall.items()},
        "mining_view": mining_view(queries, database, dataset.positives(10.0), dataset.positives(25.0)),
        "collapse": collapse(database),
    }
    if result.recall_per_condition:
        report["recall_per_condition"] = result.recall_per_condition
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
