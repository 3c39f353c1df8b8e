"""DDP helpers: a real 2-process gloo run under torchrun, and the single-process no-op paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from certcore import distributed
from certcore.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("train_ddp_worker.py")
SAMPLES, BATCH, LR = 16, 4, 0.5


def _worker_dataset():
    g = torch.Generator().manual_seed(0)  # the same data as train_ddp_worker.dataset()
    return torch.randn(SAMPLES, 5, generator=g), torch.randint(0, 3, (SAMPLES,), generator=g)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[dict, dict, Path]:
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # gloo on CPU, even on a GPU host
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(WORKER),
        str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    reports = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return reports[0], reports[1], out


@pytest.mark.slow
def test_ranks_join_one_gloo_group(ranks):
    r0, r1, _ = ranks
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["backend"] == r1["backend"] == "gloo"
    assert r0["is_main"] and not r1["is_main"]


@pytest.mark.slow
def test_one_sampler_seed_gives_disjoint_shards_that_cover_the_data(ranks):
    r0, r1, _ = ranks
    assert r0["sampler_seed"] == r1["sampler_seed"] == 7
    for epoch in (0, 1):
        shard0, shard1 = r0["indices"][epoch], r1["indices"][epoch]
        assert len(shard0) == len(shard1) == SAMPLES // 2
        assert not set(shard0) & set(shard1)
        assert sorted(shard0 + shard1) == list(range(SAMPLES))
    assert r0["indices"][0] != r0["indices"][1]  # set_epoch reshuffles
    for report in (r0, r1):  # different seeds per rank are refused on every rank
        assert report["mismatch_error"] is not None and "different seeds" in report["mismatch_error"]


@pytest.mark.slow
def test_all_reduce_mean(ranks):
    for report in ranks[:2]:
        assert torch.equal(report["mean_tensor"], torch.tensor([0.5, 1.0]))
        assert report["mean_dict"] == {"a": 0.5, "b": 3.0}


@pytest.mark.slow
def test_ddp_steps_keep_ranks_identical_and_match_one_big_batch(ranks):
    r0, r1, out = ranks
    assert not torch.equal(r0["initial"]["weight"], r1["initial"]["weight"])
    for report in (r0, r1):  # DDP broadcast rank 0's weights at wrap time
        for key, value in r0["initial"].items():
            assert torch.equal(report["after_wrap"][key], value)
    for key in r0["final"]:
        assert torch.equal(r0["final"][key], r1["final"][key]), key

    # Reference: the same two SGD steps in one process on the union of the two ranks' batches
    # (DDP averages the ranks' mean-loss gradients, i.e. the mean loss over both batches).
    x, y = _worker_dataset()
    model = nn.Linear(5, 3)
    model.load_state_dict(r0["initial"])
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(SAMPLES // 2 // BATCH):
        rows = [
            i
            for shard in (r0["indices"][0], r1["indices"][0])
            for i in shard[step * BATCH : (step + 1) * BATCH]
        ]
        loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(r0["final"][key], value, rtol=0, atol=1e-6)
    assert not torch.allclose(r0["final"]["weight"], r0["initial"]["weight"])

    # Only rank 0 wrote the run directory; fit averaged the metric over ranks.
    run = out / "run"
    assert (run / "log.txt").read_text().count("spec: ") == 1
    assert (run / "train.log").read_text().splitlines() == ["epoch\trank", "0\t0.5"]
    plain = nn.Linear(5, 3)
    load_checkpoint(run / "checkpoint.pt", model=plain)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, r0["final"][key])


def test_helpers_are_no_ops_outside_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.init_distributed()
    assert not info.is_distributed and (info.rank, info.world_size) == (0, 1)
    assert distributed.is_main_process() and distributed.world_size() == 1
    distributed.barrier()
    value = torch.tensor([1.0, 2.0])
    mean = distributed.all_reduce_mean(value)
    assert torch.equal(mean, value) and mean is not value
    assert distributed.all_reduce_mean({"a": 1, "b": torch.tensor(2.5)}) == {"a": 1.0, "b": 2.5}
    model = nn.Linear(2, 2)
    assert distributed.wrap_ddp(model) is model
    sampler = distributed.make_sampler(list(range(10)), seed=3)
    sampler.set_epoch(0)
    assert sorted(sampler) == list(range(10))
    distributed.cleanup()


def test_an_incomplete_torchrun_environment_is_named(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(RuntimeError, match=r"\['WORLD_SIZE', 'LOCAL_RANK'\] missing"):
        distributed.init_distributed()


def test_unwrap_model_sees_through_wrappers():
    inner = nn.Linear(2, 2)
    assert distributed.unwrap_model(nn.DataParallel(inner)) is inner
    assert distributed.unwrap_model(inner) is inner
