"""Checkpoints: round trip, atomic writes, and clear errors for files that do not fit."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from certcore.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint

SPEC = {"table": "linfdist-cifar8", "lr": 0.03, "model": {"depth": 3, "width": 8}, "milestones": (2, 4)}


def _model(width: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 3))


def _trained(model: nn.Module):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(2):
        loss = model(torch.randn(8, 4)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def _fresh(model: nn.Module):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            _assert_same_state(a[key], b[key])
        else:
            assert a[key] == b[key], key


def _saved(tmp_path: Path, epoch: int = 3) -> tuple[Path, nn.Module]:
    model = _model()
    optimizer, scheduler = _trained(model)
    path = save_checkpoint(
        tmp_path / "checkpoint.pt",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch=epoch,
        spec=SPEC,
    )
    return path, model


def test_round_trip_restores_model_optimizer_scheduler_and_rng(tmp_path):
    model = _model()
    optimizer, scheduler = _trained(model)
    path = save_checkpoint(
        tmp_path / "ck.pt",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch=5,
        spec=SPEC,
        extra={"best": torch.tensor([0.5])},
    )
    after_save = torch.rand(3)

    other = _model(seed=1)
    other_optimizer, other_scheduler = _fresh(other)
    loaded = load_checkpoint(
        path, model=other, optimizer=other_optimizer, scheduler=other_scheduler, expected_spec=SPEC
    )
    assert torch.equal(torch.rand(3), after_save)  # the RNG is back where it was at save time
    _assert_same_state(other.state_dict(), model.state_dict())
    _assert_same_state(other_optimizer.state_dict(), optimizer.state_dict())
    assert other_scheduler.state_dict() == scheduler.state_dict()
    assert loaded.epoch == 5 and loaded.spec["model"] == {"depth": 3, "width": 8}
    assert set(loaded.versions) == {"torch", "certcore", "python"}
    assert torch.equal(loaded.extra["best"], torch.tensor([0.5]))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and not any(key.startswith("module.") for key in raw["model"])


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path, model = _saved(tmp_path, epoch=1)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, epoch=2, spec=SPEC)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind
    assert load_checkpoint(path, model=_model(), expected_spec=SPEC).epoch == 1


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt", model=_model())


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_files_are_reported(tmp_path, damage):
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(
        {"garbage": b"\x00\x01not a checkpoint" * 50, "truncated": data[: len(data) // 2], "empty": b""}[
            damage
        ]
    )
    model = _model(seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="not a readable checkpoint .* expected a certcore checkpoint"):
        load_checkpoint(path, model=model)
    _assert_same_state(model.state_dict(), before)


def test_a_foreign_torch_file_is_reported(tmp_path):
    path = tmp_path / "model.pth"
    model = _model()
    torch.save({"state_dict": model.state_dict(), "optimizer": {}}, path)  # the ℓ∞-dist v2 layout
    with pytest.raises(
        CheckpointError,
        match=r"not a certcore checkpoint: found a dict with keys \['optimizer', 'state_dict'\]",
    ):
        load_checkpoint(path, model=model)
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="not a certcore checkpoint"):
        load_checkpoint(path, model=model)


class _Foreign:
    pass


def test_a_pickle_with_foreign_classes_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _Foreign()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path, model=_model())


def test_a_spec_mismatch_names_the_keys(tmp_path):
    path, _ = _saved(tmp_path)
    other = dict(SPEC, lr=0.1, model={"depth": 3, "width": 16}, seed=1)
    model = _model(seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="different spec") as error:
        load_checkpoint(path, model=model, expected_spec=other)
    message = str(error.value)
    assert "lr: checkpoint 0.03, expected 0.1" in message
    assert "model.width: checkpoint 8, expected 16" in message
    assert "seed: only in the expected spec" in message
    assert "table" not in message and "milestones" not in message  # equal keys are not listed
    _assert_same_state(model.state_dict(), before)


def test_a_model_that_does_not_fit_is_reported(tmp_path):
    path, _ = _saved(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"shape differs: 0.weight: checkpoint \(8, 4\), model \(16, 4\)"
    ):
        load_checkpoint(path, model=_model(width=16))
    bigger = nn.Sequential(*_model(), nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: 4.weight, 4.bias"):
        load_checkpoint(path, model=bigger)
    with pytest.raises(CheckpointError, match=r"not in the model: 3.weight, 3.bias"):
        load_checkpoint(path, model=nn.Sequential(*list(_model())[:3]))


def test_missing_optimizer_state_is_reported(tmp_path):
    model = _model()
    path = save_checkpoint(tmp_path / "ck.pt", model=model, epoch=0, spec={})
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(path, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_an_optimizer_that_does_not_fit_is_reported(tmp_path):
    path, _ = _saved(tmp_path)
    model = _model()
    optimizer = torch.optim.Adam(list(model.parameters())[:2], lr=0.01)
    with pytest.raises(CheckpointError, match="optimizer state does not fit Adam"):
        load_checkpoint(path, model=model, optimizer=optimizer)


class _Wrapper(nn.Module):
    """Stands in for DDP in a single process: its state dict keys carry a ``module.`` prefix."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_module_prefixes_are_stripped_and_wrapped_models_load(tmp_path):
    source = _model()
    path = save_checkpoint(tmp_path / "ck.pt", model=_Wrapper(source), epoch=0, spec={})
    assert all(key.startswith("module.") for key in torch.load(path, weights_only=True)["model"])
    plain = _model(seed=3)
    load_checkpoint(path, model=plain)
    _assert_same_state(plain.state_dict(), source.state_dict())
    wrapped = nn.DataParallel(_model(seed=4))  # unwrapped on load, whatever the device
    load_checkpoint(path, model=wrapped)
    _assert_same_state(wrapped.module.state_dict(), source.state_dict())


def test_spec_and_extra_must_be_plain(tmp_path):
    with pytest.raises(TypeError, match=r"spec.data_dir holds a PosixPath"):
        save_checkpoint(tmp_path / "ck.pt", model=_model(), epoch=0, spec={"data_dir": tmp_path})
    with pytest.raises(TypeError, match="extra holds a _Foreign"):
        save_checkpoint(tmp_path / "ck.pt", model=_model(), epoch=0, spec={}, extra=_Foreign())
    with pytest.raises(ValueError, match="epoch"):
        save_checkpoint(tmp_path / "ck.pt", model=_model(), epoch=-1, spec={})
    assert not (tmp_path / "ck.pt").exists()
