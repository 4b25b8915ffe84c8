"""Data-parallel QAT under torchrun: replicas stay identical and match a one-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from rmsmp.quant.ddp import World, shard

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_shards_partition_the_batch() -> None:
    x = torch.arange(7)
    parts = [shard(World(r, 3), x)[0] for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(7))
    assert [len(p) for p in parts] == [3, 2, 2]


@pytest.mark.skipif(not dist.is_gloo_available(), reason="torch.distributed without gloo")
def test_two_processes_match_one(tmp_path: Path) -> None:
    from ddp_worker import steps

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(
        [*cmd, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    one = steps(World())
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), f"replicas differ in {name}"
        assert torch.allclose(value, one["state"][name], atol=1e-4), f"{name} differs from 1 proc"
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert ranks[0]["losses"] == pytest.approx(one["losses"], rel=1e-4)
    assert one["losses"][1] < one["losses"][0]


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_gloo_available(), reason="torch.distributed without gloo")
def test_quantize_runs_under_torchrun_and_resumes(tmp_path: Path) -> None:
    from rmsmp.quant.train import read_checkpoint

    out = tmp_path / "fixed4.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["-m", "rmsmp.cli", "quantize", "--method", "fixed4", "--train-subset", "256"]
    args += ["--kd", "pretrained", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for epochs in (1, 2):
        run = subprocess.run(
            [*cmd, *args, "--epochs", str(epochs)], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.count("top-1") == 2  # rank 0 only: the epoch line and the summary
    ck = read_checkpoint(out)
    assert ck["world_size"] == 2 and ck["epoch"] == 2
    assert ck["kd"] == {"teacher": "pretrained", "weight": 0.5, "temperature": 1.0}
    assert len(ck["history"]) == 2 and ck["history"][-1]["top1"] > 60
