"""The v2 schedule (p, ε, λ, lr) at the boundary epochs, and the losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from linfdist import CrossEntropyLoss, EpochSpec, HingeLoss, MixtureLoss, RecipeSchedule


def cifar_schedule(iters: int = 98) -> RecipeSchedule:
    return RecipeSchedule(
        EpochSpec.parse("0,0,100,1250,1300"),
        eps_train=0.09411 / 0.2009,
        p_start=8,
        p_end=1000,
        lam_start=0.1,
        lam_end=0.0005,
        iters_per_epoch=iters,
    )


def test_p_schedule_boundaries() -> None:
    s = cifar_schedule()
    assert s.p_at(0) == 8.0
    assert s.p_at(99, 97) == 8.0
    assert s.p_at(100, 0) == 8.0  # the ramp starts at epoch 100
    assert s.p_at(100, 1) > 8.0
    assert s.p_at(500) == pytest.approx(42.90, abs=0.01)  # logged: p 42.90 at epoch 500
    assert s.p_at(1249) == pytest.approx(995.8, abs=0.05)  # logged: 995.81 at 1249
    assert s.p_at(1249, 97) < 1000
    assert math.isinf(s.p_at(1250))
    assert math.isinf(s.p_at(1299, 97))
    assert math.isinf(s.p_at(1300))


def test_p_stays_finite_when_p_end_small() -> None:
    s = RecipeSchedule(EpochSpec(0, 0, 0, 10, 20), eps_train=0.1, p_start=2, p_end=50)
    assert s.p_at(15) == pytest.approx(50.0)


def test_eps_lam_lr_schedules() -> None:
    s = cifar_schedule()
    assert s.eps_at(0) == pytest.approx(0.09411 / 0.2009)  # e0 = e1 = 0: full eps from the start
    assert s.lam_at(0) == pytest.approx(0.1)
    assert s.lam_at(1250) == pytest.approx(0.0005)
    mid = s.lam_at(675)  # half way through the p ramp: geometric mean
    assert mid == pytest.approx(math.sqrt(0.1 * 0.0005), rel=1e-9)
    assert s.lr_factor_at(0) == 1.0
    assert s.lr_factor_at(650) == pytest.approx(0.5)
    assert s.lr_factor_at(1300) == pytest.approx(0.0, abs=1e-12)
    ramp = RecipeSchedule(EpochSpec(0, 100, 100, 750, 800), eps_train=0.2, iters_per_epoch=10)
    assert ramp.eps_at(0) == 0.0
    assert ramp.eps_at(50) == pytest.approx(0.1)
    assert ramp.eps_at(100) == pytest.approx(0.2)
    assert ramp.lam_at(10) == 0.0
    st = ramp.at(50, 5)
    assert st.p == 8.0 and st.eps == pytest.approx(0.2 * 50.5 / 100)


def test_bad_schedules_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="must not decrease"):
        RecipeSchedule(EpochSpec(0, 0, 0, 10, 20), eps_train=0.1, p_start=8, p_end=4)
    with pytest.raises(ValueError, match="eps_train"):
        RecipeSchedule(EpochSpec(0, 0, 0, 10, 20), eps_train=-0.1)
    with pytest.raises(ValueError, match="must not end before it starts"):
        EpochSpec(0, 0, 100, 50, 200)
    with pytest.raises(ValueError, match="<= total"):
        EpochSpec(0, 0, 100, 250, 200)
    with pytest.raises(ValueError, match="five"):
        EpochSpec.parse("0,0,100")
    assert EpochSpec.parse("0,0,25,400,450").as_string() == "0,0,25,400,450"


def test_mixture_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    worst = torch.tensor([[0.0, 0.4, -0.5], [1.7, 0.0, 0.2]])
    y = torch.tensor([0, 1])
    lam = 0.05
    loss = MixtureLoss(0.1, 0.001)(logits, worst, y, lam)
    hinge = (0.4 + 1.0) / 2  # per sample max_j clip(worst_j, 0, 1)
    ce = (
        -(
            math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1))
            + math.log(math.exp(3) / (1 + math.exp(3) + math.exp(1)))
        )
        / 2
    )
    assert float(loss) == pytest.approx(hinge + lam * ce, rel=1e-6)


def test_hinge_and_crossentropy_losses() -> None:
    worst = torch.tensor([[0.0, 0.4, -0.5], [1.7, 0.0, 0.2]])
    logits = torch.randn(2, 3)
    y = torch.tensor([0, 1])
    h = HingeLoss(mix=0.25)(logits, worst, y)
    assert float(h) == pytest.approx(0.75 * (0.4 + 1.7) / 2 + 0.25 * (0.4 + 1.7 + 0.2) / 6)
    c = CrossEntropyLoss(mix=0.5)(logits, worst, y)
    assert float(c) == pytest.approx(
        float(0.5 * F.cross_entropy(worst, y) + 0.5 * F.cross_entropy(logits, y))
    )
    with pytest.raises(ValueError):
        MixtureLoss(0.0, 0.1)
