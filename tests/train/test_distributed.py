"""Data-parallel training on two CPU processes (gloo), started the way torchrun starts them.

Each worker gets torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) and calls ``train`` like ``python -m vprdistill
train`` does, so the loop itself detects the launch and joins the group.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from tests.train.helpers import tiny_config as shared_tiny_config
from vprdistill.train.distributed import DistributedContext, prepare_batchnorm, set_training_mode
from vprdistill.train.loop import train

WORLD_SIZE = 2
TIMEOUT_S = 300


def tiny_config(dataset, **extra):
    return shared_tiny_config(
        dataset,
        [
            # Descriptors are unit vectors (distances <= 2), so a mining margin of 4 makes every
            # sampled negative violate it: each tuple has exactly 4 negatives and no query is
            # skipped. The loss keeps the usual 0.1 margin.
            "mining.margin=4.0",
            "method={name: triplet, loss: {name: triplet, margin: 0.1}}",
            "threads=1",
        ],
        **extra,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, port: int, dataset: str, overrides: dict, run_dir: str, resume: bool, weights_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    seen = {}
    train(
        tiny_config(dataset, **overrides),
        run_dir,
        resume=resume,
        step_callbacks=[lambda info: seen.update(model=info.model)],
    )
    # Every rank's own copy of the student, to check the ranks agree (only rank 0 writes the run folder).
    state = {key: value.detach().contiguous() for key, value in seen["model"].state_dict().items()}
    save_file(state, str(Path(weights_dir) / f"rank{rank}.safetensors"))


def _train_on_two_processes(dataset: Path, run_dir: Path, weights_dir: Path, resume: bool = False, **overrides):
    weights_dir.mkdir(parents=True, exist_ok=True)
    args = (_free_port(), str(dataset), overrides, str(run_dir), resume, str(weights_dir))
    # A fork server imports this module (torch, timm, the package) and scikit-learn (the miner's
    # neighbour search) once for all workers of the session instead of once per worker, and
    # forks them from a process that never started threads.
    mp.get_context("forkserver").set_forkserver_preload([__name__, "sklearn.neighbors"])
    processes = mp.start_processes(_worker, args=args, nprocs=WORLD_SIZE, join=False, start_method="forkserver")
    deadline = time.monotonic() + TIMEOUT_S
    while not processes.join(timeout=5):  # raises when a worker failed, with its traceback
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail(f"two-process training did not finish in {TIMEOUT_S} s (a rank waits in a collective)")
    return [load_file(str(weights_dir / f"rank{rank}.safetensors")) for rank in range(WORLD_SIZE)]


def _assert_identical(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_agree_match_one_process_and_resume(synth_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers on a shared 2-core machine
    # BatchNorm frozen: the forward pass then does not depend on how the global batch is
    # split between processes, so 2 processes × 4 tuples must give 1 process × 8 tuples.
    # (With per-process batch statistics the two runs compute different functions; torch's
    # SyncBatchNorm, the exact remedy, runs on CUDA only.)
    ranks = _train_on_two_processes(synth_tiny, tmp_path / "ddp", tmp_path / "w1", batchnorm="frozen")
    _assert_identical(ranks[0], ranks[1], "rank 0 vs rank 1 after epoch 1")
    _assert_identical(ranks[0], load_file(str(tmp_path / "ddp" / "last.safetensors")), "rank 0 vs last checkpoint")

    single = train(tiny_config(synth_tiny, batchnorm="frozen", batch_size=8), tmp_path / "single")
    single_weights = load_file(str(single.run_dir / "last.safetensors"))
    ddp_metrics, single_metrics = _metrics(tmp_path / "ddp"), _metrics(single.run_dir)
    assert len(ddp_metrics) == 1, "rank 1 wrote metrics too"
    assert ddp_metrics[0]["world_size"] == 2
    assert ddp_metrics[0]["tuples"] == single_metrics[0]["tuples"] == 32
    assert ddp_metrics[0]["steps"] == single_metrics[0]["steps"] == 4
    # Same tuples, same global batches: the runs differ only by float32 rounding (the
    # all-reduced gradient sums the two halves in another order), which Adam's per-weight
    # normalisation can enlarge for weights whose gradient is near zero. Measured: at most
    # 7e-6 of a tensor's norm. One process with batch 4 instead of 8 ends 7e-4 to 2 (median
    # 0.2) away, so 1e-4 separates "the same training" from "another batch" by 7x each way.
    for key, reference in single_weights.items():
        if not reference.is_floating_point():
            continue
        difference = (ranks[0][key] - reference).norm() / reference.norm().clamp(min=1e-12)
        assert difference < 1e-4, f"{key}: relative difference {difference:.2e} between 2 processes and 1"

    # Resume on two processes (every rank loads `last`, optimizer state included) and train
    # epoch 2 with per-process BatchNorm statistics: the ranks still hold the same network,
    # running statistics included, because rank 0's are copied to all before validation.
    ranks = _train_on_two_processes(
        synth_tiny, tmp_path / "ddp", tmp_path / "w2", resume=True, batchnorm="batch", epochs=2
    )
    _assert_identical(ranks[0], ranks[1], "rank 0 vs rank 1 after resuming for epoch 2")
    _assert_identical(ranks[0], load_file(str(tmp_path / "ddp" / "last.safetensors")), "rank 0 vs last checkpoint")
    assert [m["epoch"] for m in _metrics(tmp_path / "ddp")] == [1, 2]
    moved = [not torch.equal(ranks[0][k], v) for k, v in single_weights.items() if "running_mean" in k]
    assert any(moved), "epoch 2 with batchnorm: batch should update the running statistics"


def test_shards_cover_every_row_once_and_shares_rebuild_the_global_batches():
    contexts = [DistributedContext(rank, 3, rank, torch.device("cpu")) for rank in range(3)]
    rows = [i for c in contexts for i in range(20)[c.shard(20)]]
    assert rows == list(range(20))
    tuples = list(range(23))
    shares = [c.share(tuples) for c in contexts]
    assert [len(s) for s in shares] == [7, 7, 7]  # 23 - 23 % 3 = 21 tuples, 7 per rank
    per_rank_batch = 2
    for k in range(4):
        union = sorted(t for s in shares for t in s[k * per_rank_batch : (k + 1) * per_rank_batch])
        assert union == tuples[k * 6 : min((k + 1) * 6, 21)]


def test_batchnorm_modes():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout())
    set_training_mode(model, "frozen")
    assert model.training and model[2].training and not model[1].training
    set_training_mode(model, "batch")
    assert model[1].training
    two_cpu_ranks = DistributedContext(0, 2, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="sync needs CUDA"):
        prepare_batchnorm(model, "sync", two_cpu_ranks)
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        prepare_batchnorm(model, "group", two_cpu_ranks)
    assert prepare_batchnorm(model, "frozen", two_cpu_ranks) is model
