"""Certification at p = ∞: IBP vs the 2ε margin rule, soundness (samples and PGD), the unsound-run alarm."""

from __future__ import annotations

import math

import pytest
import torch

from certcore.attacks import pgd
from certcore.bounds import Interval
from certcore.testing import check_bounds_sound, check_certified_robust
from linfdist import HybridConfig, MLPConfig, build_model, set_p
from linfdist.certify import CertificationUnsoundError, certify_batch, evaluate, margin_certify, pgd_robust
from linfdist.data import synthetic_data
from linfdist.losses import CrossEntropyLoss, MixtureLoss
from linfdist.recipes import EvalPlan, TrainRecipe
from linfdist.schedule import EpochSpec
from linfdist.train import Trainer

EPS = 0.08  # normalised units (digits: pixels in [0, 1], std 1)
EPS_HYBRID = 0.02  # IBP through the MLP head is looser


def _trained(kind: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A small net trained for a few epochs on generated 8x8 digits, and test data."""
    if kind == "mlp":
        model, loss, epochs = MLPConfig(depth=4, width=80), MixtureLoss(0.05, 0.005), EpochSpec(0, 0, 1, 5, 6)
        eps_train, eps_test = 0.25, EPS
    else:
        model, loss, epochs = (
            HybridConfig(depth=4, width=80, hidden=32),
            CrossEntropyLoss(),
            EpochSpec(0, 2, 1, 5, 6),
        )
        eps_train, eps_test = 0.04, EPS_HYBRID
    recipe = TrainRecipe(
        "digits",
        model,
        loss,
        epochs,
        eps_train=eps_train,
        eps_test=eps_test,
        batch_size=64,
        normalization="none",
        augment=False,
        lr=0.02 if kind == "hybrid" else 0.03,
        eval=EvalPlan(pgd_steps=0),
    )
    data = synthetic_data("digits", n_train=384, n_test=128, normalization="none", seed=1)
    trainer = Trainer(recipe, data, seed=0)
    for epoch in range(epochs.total):
        trainer.train_one_epoch(epoch)
    set_p(trainer.model, math.inf)
    return trainer.model.eval(), data.x_test, data.y_test, eps_test


@pytest.fixture(scope="module")
def mlp():
    return _trained("mlp")


@pytest.fixture(scope="module")
def hybrid():
    return _trained("hybrid")


def test_ibp_and_margin_rule_agree(mlp) -> None:
    model, x, y, _ = mlp
    _, ibp_cert = certify_batch(model, x, y, EPS, None, None)  # unclipped box: IBP = y ± eps exactly
    rule = margin_certify(model, x, y, EPS)
    assert int(rule.sum()) > 10, "the fixture should certify a fair number of samples"
    assert torch.equal(ibp_cert, rule)
    _, clipped = certify_batch(model, x, y, EPS, 0.0, 1.0)  # clipping to the data range only tightens
    assert bool((clipped | ~rule).all())


@pytest.mark.parametrize("kind", ["mlp", "hybrid"])
def test_bounds_contain_sampled_logits(kind, mlp, hybrid) -> None:
    model, x, y, eps = mlp if kind == "mlp" else hybrid
    box = Interval.from_eps(x[:32], eps, data_min=0.0, data_max=1.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = model.interval_forward(box)
        _, worst = model(x[:32], targets=y[:32], eps=eps, data_min=0.0, data_max=1.0)
        for _ in range(40):
            u = torch.rand(x[:32].shape, generator=g)
            s = box.lower + (box.upper - box.lower) * (u > 0.5).float()  # box corners
            z = model(s)
            assert bool(out.contains(z, atol=1e-4).all())
            margin = z - z.gather(1, y[:32].view(-1, 1))
            if kind == "mlp":
                margin = margin / model.scalar / (2 * eps)  # worst is unscaled and divided by 2 eps
            assert bool((margin <= worst + 1e-4).all())


@pytest.mark.parametrize("kind", ["mlp", "hybrid"])
def test_pgd_never_breaks_a_certified_sample(kind, mlp, hybrid) -> None:
    model, x, y, eps = mlp if kind == "mlp" else hybrid
    _, cert = certify_batch(model, x, y, eps, 0.0, 1.0)
    assert int(cert.sum()) > 0
    ok = pgd_robust(model, x, y, eps, 0.0, 1.0, steps=30)
    assert not bool((cert & ~ok).any())
    # a stronger, margin-loss attack with restarts from certcore directly
    x_adv = pgd(model, x[cert], y[cert], eps, steps=30, restarts=2, loss="margin", data_min=0.0, data_max=1.0)
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) == y[cert]).all())
    result = evaluate(model, [(x, y)], eps, 0.0, 1.0, pgd_steps=20)
    assert result.certified <= result.pgd <= result.clean <= result.n


@pytest.mark.parametrize("kind", ["mlp", "hybrid"])
def test_certcore_soundness_kit(kind, mlp, hybrid) -> None:
    """certcore.testing: logit bounds and margin bounds hold at samples, corners and PGD points;
    no certified sample is broken by PGD (margin and CE losses, restarts)."""
    model, x, y, eps = mlp if kind == "mlp" else hybrid
    x, y = x[:24], y[:24]
    check_bounds_sound(
        model,
        x,
        eps,
        model.interval_forward,
        data_min=0.0,
        data_max=1.0,
        n_samples=16,
        pgd_steps=10,
        atol=1e-4,
        rtol=1e-4,
    )
    scale = model.scalar if kind == "mlp" else 1.0

    def margins(xp: torch.Tensor) -> torch.Tensor:  # z_j - z_y, in the units of `worst`
        t = y.repeat(xp.shape[0] // y.shape[0]).view(-1, 1)  # the kit stacks copies of the batch
        z = model(xp) / scale
        m = z - z.gather(1, t)
        return m / (2 * eps) if kind == "mlp" else m

    def margin_bounds(box: Interval):
        with torch.no_grad():
            _, worst = model(x, targets=y, eps=eps, data_min=0.0, data_max=1.0)  # the same clipped box
        return torch.full_like(worst, -math.inf), worst

    check_bounds_sound(
        margins,
        x,
        eps,
        margin_bounds,
        data_min=0.0,
        data_max=1.0,
        n_samples=16,
        pgd_steps=10,
        atol=1e-4,
        rtol=1e-4,
    )
    _, cert = certify_batch(model, x, y, eps, 0.0, 1.0)
    check_certified_robust(model, x, y, eps, cert, data_min=0.0, data_max=1.0, pgd_steps=20)


def test_certification_runs_at_p_inf_and_restores_p(mlp) -> None:
    model, x, y, _ = mlp
    set_p(model, 8.0)
    model.train()
    try:
        _, a = certify_batch(model, x, y, EPS, 0.0, 1.0)
        assert all(layer.p == 8.0 for layer in model.layers) and model.training
    finally:
        set_p(model, math.inf)
        model.eval()
    _, b = certify_batch(model, x, y, EPS, 0.0, 1.0)
    assert torch.equal(a, b)


def test_unsound_certificate_fails_loudly(mlp, monkeypatch) -> None:
    import linfdist.certify as certify

    model, x, y, _ = mlp

    def everything_certified(net, xb, yb, eps, lo, hi):
        correct = torch.ones_like(yb, dtype=torch.bool)
        return correct, correct

    monkeypatch.setattr(certify, "certify_batch", everything_certified)
    with pytest.raises(CertificationUnsoundError, match="broken by PGD"):
        certify.evaluate(model, [(x, y)], 0.5, 0.0, 1.0, pgd_steps=10)


def test_bad_eps() -> None:
    model = build_model(MLPConfig(depth=3, width=8), (1, 2, 2))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps > 0"):
        certify_batch(model, x, y, 0.0, None, None)
    with pytest.raises(ValueError, match="eps must be finite"):
        model(x, targets=y, eps=-1.0)
