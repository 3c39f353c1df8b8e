"""Two processes under gloo (as torchrun sets them up): disjoint shards, one sampler seed, equal weights."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys

import pytest
import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = r"""
import os, sys, traceback
import torch

rank, out_dir = int(os.environ["RANK"]), sys.argv[1]
try:
    torch.set_num_threads(1)
    from certcore.distributed import cleanup, init_distributed, make_sampler
    from linfdist import MixtureLoss, MLPConfig
    from linfdist.data import synthetic_data
    from linfdist.recipes import EvalPlan, TrainRecipe
    from linfdist.schedule import EpochSpec
    from linfdist.train import Trainer

    info = init_distributed("gloo")
    assert info.is_distributed and info.world_size == 2
    recipe = TrainRecipe("digits", MLPConfig(depth=3, width=64), MixtureLoss(0.05, 0.005),
                         EpochSpec(0, 0, 0, 1, 2), eps_train=0.25, eps_test=0.08, batch_size=32,
                         normalization="none", eval=EvalPlan(every=1, certify_train=False, pgd_steps=0))
    data = synthetic_data("digits", n_train=96, n_test=40, normalization="none", seed=5)
    trainer = Trainer(recipe, data, seed=1)
    init = [p.detach().clone() for p in trainer.model.parameters()]
    sampler = make_sampler(range(len(data.y_train)), seed=trainer.seed)  # the trainer's sampler
    sampler.set_epoch(0)
    seen = list(iter(sampler))
    metrics = trainer.train_one_epoch(0)
    test = trainer.evaluate(0)
    state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    changed = any(not torch.equal(a, b) for a, b in zip(init, trainer.model.parameters()))
    torch.save({"state": state, "seen": seen, "metrics": metrics, "test": test, "changed": changed,
                "iters": data.iters_per_epoch(recipe.batch_size)}, os.path.join(out_dir, f"rank{rank}.pt"))
    cleanup()
except BaseException:
    traceback.print_exc()
    sys.exit(1)
"""


def test_two_process_gloo_training_step(tmp_path) -> None:
    """Two ranks started as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    if any(proc.returncode for proc in procs):
        pytest.fail("a DDP worker failed:\n" + "\n".join(outputs))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert r0["changed"] and r1["changed"]
    for name, a in r0["state"].items():  # DDP averaged the gradients: the replicas stay equal
        torch.testing.assert_close(a, r1["state"][name], rtol=0, atol=1e-6, msg=name)
    assert not set(r0["seen"]) & set(r1["seen"])  # one sampler seed: the shards are disjoint...
    assert sorted(r0["seen"] + r1["seen"]) == list(range(96))  # ...and cover the data set
    assert r0["iters"] == 3  # 48 samples per rank in local batches of 32 / 2 = 16
    for r in (r0, r1):
        assert math.isnan(r["test"].pop("pgd_acc"))  # no PGD in this epoch
    assert r0["test"] == r1["test"]  # counts summed over ranks: every rank reports the same numbers
