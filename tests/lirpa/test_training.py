"""Certified training (lirpa.training): a tiny CROWN-IBP run on generated data improves verified
accuracy; resuming gives the same result; the certified ⊆ PGD-robust check fails loudly; the CLI."""

from __future__ import annotations

import pytest
import torch

import lirpa.training as training
from lirpa.training import (
    SoundnessError,
    TrainConfig,
    crown_factor,
    evaluate,
    load_data,
    main,
    margin_matrix,
    train,
)
from lirpa.zoo import build_model

TINY = TrainConfig(
    dataset="synthetic-mnist", model="mlp_2layer", eps=0.05, eps_train=0.05, method="CROWN-IBP", batch=32,
    lr=1e-3, epochs=4, milestones=(3,), ramp_start=1.0, ramp_length=2.0, n_train=512, n_test=128,
    pgd_steps=5, augment=False, eval_every=4,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = load_data(TINY)
    result = train(TINY, tmp_path_factory.mktemp("run") / "run", data=data)
    return result, data


def test_crown_ibp_training_improves_verified_accuracy(trained):
    result, data = trained
    torch.manual_seed(TINY.seed)
    untrained = build_model(TINY.model, data.info.input_shape, data.info.num_classes)
    before = evaluate(untrained, data, TINY)
    after = result.metrics
    assert before["verified_err"] > 0.8
    assert after["verified_err"] < 0.3 and after["verified_err"] < before["verified_err"] - 0.5
    assert after["clean_err"] <= after["pgd_err"] <= after["verified_err"]
    assert after["verified_err"] <= min(after["ibp_verified_err"], after["crown_ibp_verified_err"])
    run = result.run_dir
    for name in ("log.txt", "train.log", "test.log", "checkpoint.pt"):
        assert (run / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in run.rglob("*")), "TensorBoard events"


@pytest.mark.parametrize("method", ["CROWN-IBP+loss-fusion", "IBP"])
def test_resume_gives_the_same_result(tmp_path, method):
    cfg = TINY.with_(method=method, epochs=3, n_train=128, n_test=64, ramp_start=0.5, ramp_length=1.5)
    data = load_data(cfg)
    whole = train(cfg, tmp_path / "whole", data=data)
    part = train(cfg, tmp_path / "part", data=data, stop_after_epoch=0)
    assert not part.metrics or part.history[-1].epoch == 0
    resumed = train(cfg, tmp_path / "part", data=data, resume=True)
    assert resumed.metrics == whole.metrics
    assert [h.train for h in resumed.history] == [h.train for h in whole.history[1:]]
    assert (tmp_path / "whole" / "train.log").read_text() == (tmp_path / "part" / "train.log").read_text()


def test_a_certified_sample_broken_by_pgd_raises(trained, monkeypatch):
    result, data = trained
    torch.manual_seed(TINY.seed)
    model = build_model(TINY.model, data.info.input_shape, data.info.num_classes)
    from certcore.checkpoint import load_checkpoint

    load_checkpoint(result.run_dir / "checkpoint.pt", model=model)
    assert evaluate(model, data, TINY)["verified_err"] < 0.5

    def broken_attack(model, x, y, eps, **kwargs):  # "finds" points far outside the ball
        return x.flip(0)

    monkeypatch.setattr(training, "pgd", broken_attack)
    with pytest.raises(SoundnessError, match="certified"):
        evaluate(model, data, TINY)


def test_margin_matrix_and_crown_factor():
    y = torch.tensor([0, 2])
    C = margin_matrix(y, 3)
    assert C.shape == (2, 2, 3)
    torch.testing.assert_close(C[1], torch.tensor([[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0]]))
    cfg = TINY.with_(eps_train=0.4)
    assert crown_factor(cfg, 0.0) == 1.0 and crown_factor(cfg, 0.4) == 0.0
    assert crown_factor(cfg, 0.1) == pytest.approx(0.75)
    assert crown_factor(cfg.with_(beta_end=0.5), 0.4) == 0.5


def test_config_validation():
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="CROWN")
    with pytest.raises(ValueError, match="eps"):
        TrainConfig(eps=-0.1)
    with pytest.raises(ValueError, match="batch"):
        TrainConfig(batch=0)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--method", "--eps-train", "--ramp-start", "--resume", "--data-dir"):
        assert flag in out
