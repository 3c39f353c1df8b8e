"""The resumable loop: an interrupted and resumed run ends bit-identical to one that never stopped."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import certcore.checkpoint
from certcore.checkpoint import CheckpointError, load_checkpoint
from certcore.runlog import RunDirectoryError
from certcore.seeding import epoch_generator
from certcore.training import fit

SEED = 2021
EPOCHS = 4
SPEC = {"recipe": "tiny", "lr": 0.01, "batch_size": 16}


@dataclass
class Run:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    interrupt_at: tuple[int, int] | None = None  # (epoch, batch): raise KeyboardInterrupt after that step

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g))
        loader = DataLoader(data, batch_size=16, shuffle=True, generator=epoch_generator(SEED, epoch))
        self.model.train()
        total = 0.0
        for batch, (x, y) in enumerate(loader):
            # Randomness from every global stream, as augmentation and dropout would draw it.
            x = x + 0.05 * torch.randn_like(x)
            x = x * (1.0 + 0.05 * float(np.random.randn()))  # noqa: NPY002
            x = x * (1.0 + 0.05 * random.random())
            loss = nn.functional.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            if self.interrupt_at == (epoch, batch):
                raise KeyboardInterrupt
        return {"lr": self.optimizer.param_groups[0]["lr"], "loss": total / len(loader)}

    def evaluate(self, epoch: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
        self.model.eval()
        with torch.no_grad():
            return {"acc": (self.model(x).argmax(1) == y).float().mean().item()}

    def fit(self, path: Path, **kwargs):
        kwargs.setdefault("spec", SPEC)
        return fit(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            epochs=EPOCHS,
            train_one_epoch=self.train_one_epoch,
            evaluate=self.evaluate,
            seed=SEED,
            **kwargs,
        )


def _run(init_seed: int = 0, **kwargs) -> Run:
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=SPEC["lr"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    return Run(model, optimizer, scheduler, **kwargs)


def _assert_identical(a: Run, b: Run) -> None:
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    state_a, state_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for index, per_param in state_a["state"].items():
        for key, value in per_param.items():
            assert torch.equal(value, state_b["state"][index][key]), (index, key)
    assert a.scheduler.state_dict() == b.scheduler.state_dict()


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Run, Path]:
    path = tmp_path_factory.mktemp("straight") / "run"
    run = _run()
    result = run.fit(path)
    assert result.finished and result.last_epoch == EPOCHS - 1 and len(result.history) == EPOCHS
    return run, path


def test_stop_and_resume_gives_the_same_final_weights(straight, tmp_path):
    reference, reference_dir = straight
    first = _run().fit(tmp_path / "run", stop_after_epoch=1)
    assert not first.finished and first.last_epoch == 1
    assert load_checkpoint(first.checkpoint, model=_run().model).epoch == 1

    resumed = _run(init_seed=99)  # different initial weights: everything must come from the checkpoint
    result = resumed.fit(tmp_path / "run", resume=True)
    assert result.resumed_from == 1 and [r.epoch for r in result.history] == [2, 3] and result.finished
    _assert_identical(reference, resumed)
    assert (reference_dir / "train.log").read_text().startswith("epoch\tlr\tloss\n")  # the callback's order
    for name in ("train.log", "test.log"):
        assert (tmp_path / "run" / name).read_text() == (reference_dir / name).read_text()
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_resume_depends_on_the_restored_rng(straight, tmp_path, monkeypatch):
    # Control for the test above: without restoring the RNG streams the weights do differ.
    reference, _ = straight
    _run().fit(tmp_path / "run", stop_after_epoch=1)
    monkeypatch.setattr(certcore.checkpoint, "set_rng_state", lambda state: None)
    resumed = _run(init_seed=99)
    resumed.fit(tmp_path / "run", resume=True)
    assert not torch.equal(resumed.model[0].weight, reference.model[0].weight)


def test_keyboard_interrupt_mid_epoch_keeps_the_last_checkpoint(straight, tmp_path):
    reference, reference_dir = straight
    interrupted = _run(interrupt_at=(3, 1))
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(tmp_path / "run", checkpoint_every=2)  # checkpoints after epochs 1 and 3
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert load_checkpoint(checkpoint, model=_run().model, expected_spec=SPEC).epoch == 1
    assert "interrupted during epoch 3 (KeyboardInterrupt)" in (tmp_path / "run" / "log.txt").read_text()
    assert [row.split("\t")[0] for row in (tmp_path / "run" / "train.log").read_text().splitlines()] == [
        "epoch",
        "0",
        "1",
        "2",
    ]

    resumed = _run(init_seed=7)
    resumed.fit(tmp_path / "run", resume=True, checkpoint_every=2)  # epoch 2 runs again, its row is replaced
    _assert_identical(reference, resumed)
    assert (tmp_path / "run" / "train.log").read_text() == (reference_dir / "train.log").read_text()


def test_resume_refuses_a_different_spec(straight, tmp_path):
    _run().fit(tmp_path / "run", stop_after_epoch=0)
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.01, expected 0.02"):
        _run().fit(tmp_path / "run", resume=True, spec=dict(SPEC, lr=0.02))


def test_a_finished_run_resumes_to_nothing(straight):
    _, path = straight
    run = _run(init_seed=5)
    result = run.fit(path, resume=True)
    assert result.finished and result.history == () and result.resumed_from == EPOCHS - 1


def test_starting_over_an_existing_run_needs_overwrite(tmp_path):
    _run().fit(tmp_path / "run", stop_after_epoch=0)
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        _run().fit(tmp_path / "run")
    result = _run().fit(tmp_path / "run", overwrite=True, stop_after_epoch=0)
    assert result.resumed_from is None
    assert [row.split("\t")[0] for row in (tmp_path / "run" / "train.log").read_text().splitlines()] == [
        "epoch",
        "0",
    ]


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        _run().fit(tmp_path / "run", resume=True)
    assert not (tmp_path / "run").exists()  # a mistaken resume leaves nothing that blocks a fresh start


def test_callbacks_must_return_metrics(tmp_path):
    run = _run()
    with pytest.raises(TypeError, match="must return a dict"):
        fit(
            tmp_path / "a",
            model=run.model,
            optimizer=run.optimizer,
            epochs=1,
            train_one_epoch=lambda e: 0.5,
            spec={},
            seed=0,
        )
    with pytest.raises(TypeError, match="metrics must be real numbers"):
        fit(
            tmp_path / "b",
            model=run.model,
            optimizer=run.optimizer,
            epochs=1,
            train_one_epoch=lambda e: {"loss": "low"},
            spec={},
            seed=0,
        )
    with pytest.raises(ValueError, match="stop_after_epoch"):
        fit(
            tmp_path / "c",
            model=run.model,
            optimizer=run.optimizer,
            epochs=2,
            train_one_epoch=lambda e: {},
            spec={},
            seed=0,
            stop_after_epoch=2,
        )
