"""Loss fusion: ``CrossEntropyWrapper`` and the gather / label-margin / max-shifted exp rules.

* the wrapper computes ``Σ_j exp(z_j - z_y)`` (its log is the cross-entropy);
* bounds of the wrapper's output (every method, with and without the shift) are sound;
* the fused robust loss upper-bounds the true CE at sampled and PGD points, equals the clean CE at ε = 0,
  and is differentiable w.r.t. the parameters;
* fused vs unfused IBP: the two robust losses are equal (the margin is merged into the last Linear in
  both); CROWN-IBP: both are upper bounds, their order is only measured, not asserted.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certcore.attacks import pgd
from certcore.testing import check_bounds_sound
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm, UnsupportedOperationError
from lirpa.loss_fusion import (
    CrossEntropyWrapper,
    exp_max_input,
    fused_robust_loss,
    fused_upper_bound,
    margin_robust_loss,
)
from lirpa.training import margin_matrix

DT = torch.float64
N_CLASSES = 5


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, N_CLASSES)
    ).to(DT)


def cnn() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 8), nn.ReLU(),
        nn.Linear(8, N_CLASSES),
    ).to(DT)


class LogitsAfterReLU(nn.Module):
    """No final Linear: the margin cannot be merged, the general gather/sub rules are used."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, N_CLASSES)).to(DT)

    def forward(self, x):
        return torch.tanh(self.body(x)) * 3.0


def data(batch: int = 6):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(batch, 3, 2, 2, dtype=DT, generator=g)
    y = torch.randint(0, N_CLASSES, (batch,), generator=g)
    return x, y


def bounded(x, lower, upper):
    return BoundedTensor(x, PerturbationLpNorm(norm=math.inf, x_L=lower, x_U=upper))


def ball(x, eps):
    return bounded(x, x - eps, x + eps)


def tile(labels, z):
    """check_bounds_sound evaluates the function on the batch repeated k times (tiled)."""
    return labels.repeat(z.shape[0] // labels.shape[0], *([1] * (labels.dim() - 1)))


MODELS = {"mlp": mlp, "cnn": cnn, "no_final_linear": LogitsAfterReLU}


def test_wrapper_is_sum_of_exp_margins_and_its_log_is_ce():
    model = mlp()
    x, y = data()
    out = CrossEntropyWrapper(model)(x, y)
    z = model(x)
    expected = torch.exp(z - z[torch.arange(len(y)), y][:, None]).sum(1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.log(out), F.cross_entropy(z, y, reduction="none"))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP", "CROWN", "forward"])
def test_wrapper_bounds_are_sound(name, method):
    model = MODELS[name]()
    x, y = data()
    wrapper = CrossEntropyWrapper(model)
    bm = BoundedModule(wrapper, (x, y))

    def bound_fn(box):
        return bm.compute_bounds(x=(bounded(box.center, box.lower, box.upper), y), method=method)

    check_bounds_sound(lambda z: wrapper(z, tile(y, z)), x, 0.05, bound_fn, n_samples=16, pgd_steps=10)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP", "CROWN"])
def test_shifted_bounds_times_exp_shift_are_sound(name, method):
    model = MODELS[name]()
    x, y = data()
    wrapper = CrossEntropyWrapper(model)
    bm = BoundedModule(wrapper, (x, y), bound_opts={"loss_fusion": True})

    def bound_fn(box):
        lb, ub = bm.compute_bounds(x=(bounded(box.center, box.lower, box.upper), y), method=method)
        scale = torch.exp(exp_max_input(bm))
        return lb * scale, ub * scale

    check_bounds_sound(lambda z: wrapper(z, tile(y, z)), x, 0.05, bound_fn, n_samples=16, pgd_steps=10)


def _worst_ce(model, x, y, eps, n=64):
    """The largest per-sample CE found by sampling and PGD in the ball."""
    g = torch.Generator().manual_seed(5)
    worst = F.cross_entropy(model(x), y, reduction="none")
    for _ in range(n):
        xs = x + (2 * torch.rand(x.shape, dtype=DT, generator=g) - 1) * eps
        worst = torch.maximum(worst, F.cross_entropy(model(xs), y, reduction="none"))
    x_adv = pgd(model, x, y, eps, steps=30, loss="ce", generator=g)
    assert float((x_adv - x).abs().max()) <= eps + 1e-12
    return torch.maximum(worst, F.cross_entropy(model(x_adv), y, reduction="none")).detach()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP"])
def test_fused_loss_upper_bounds_the_true_ce(name, method):
    model = MODELS[name]()
    x, y = data()
    bm = BoundedModule(CrossEntropyWrapper(model), (x, y), bound_opts={"loss_fusion": True})
    eps = 0.05
    ub, m = fused_upper_bound(bm, ball(x, eps), y, method)
    per_sample = torch.log(ub) + m
    worst = _worst_ce(model, x, y, eps)
    assert bool((per_sample >= worst - 1e-9).all()), (per_sample, worst)
    loss = fused_robust_loss(bm, ball(x, eps), y, method, crown_factor=0.5)
    assert float(loss.detach()) >= float(worst.mean()) - 1e-9


@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP"])
def test_fused_loss_at_eps_zero_is_the_clean_ce(method):
    model = cnn()
    x, y = data()
    bm = BoundedModule(CrossEntropyWrapper(model), (x, y), bound_opts={"loss_fusion": True})
    loss = fused_robust_loss(bm, ball(x, 0.0), y, method)
    assert abs(float(loss.detach()) - float(F.cross_entropy(model(x), y).detach())) < 1e-5
    model32 = cnn().float()
    bm32 = BoundedModule(CrossEntropyWrapper(model32), (x.float(), y), bound_opts={"loss_fusion": True})
    loss32 = fused_robust_loss(bm32, ball(x.float(), 0.0), y, method)
    assert abs(float(loss32.detach()) - float(F.cross_entropy(model32(x.float()), y).detach())) < 1e-5


@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP"])
def test_gradients_reach_every_parameter(method):
    model = cnn()
    x, y = data()
    bm = BoundedModule(CrossEntropyWrapper(model), (x, y), bound_opts={"loss_fusion": True})
    loss = fused_robust_loss(bm, ball(x, 0.05), y, method, crown_factor=0.7)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name


def test_large_logits_do_not_overflow_with_the_shift():
    """float32 exp overflows above ~88; the max-shift keeps the fused loss finite (and an upper bound)."""
    model = mlp().float()
    with torch.no_grad():
        model[-1].weight.mul_(2000.0)
    x, y = data()
    x = x.float()
    eps = 0.05
    bm = BoundedModule(CrossEntropyWrapper(model), (x, y), bound_opts={"loss_fusion": True})
    ub, m = fused_upper_bound(bm, ball(x, eps), y, "IBP")
    per_sample = (torch.log(ub) + m).detach()
    assert bool(torch.isfinite(per_sample).all()) and float(per_sample.max()) > 88
    ce = F.cross_entropy(model(x), y, reduction="none")
    assert bool((per_sample >= ce * (1 - 1e-5)).all())
    plain = BoundedModule(CrossEntropyWrapper(model), (x, y))
    _, unshifted = plain.compute_bounds(x=(ball(x, eps), y), method="IBP", bound_lower=False)
    assert bool(torch.isinf(unshifted).any())  # what the shift avoids


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fused_ibp_equals_the_unfused_c_merged_ibp_loss(name):
    """Both merge the margins into the final Linear; exp is monotone and the sum adds upper bounds, so
    log(Σ_j exp(ub_j)) = log(1 + Σ_{j≠y} exp(-lb_j)) exactly (up to rounding)."""
    model = MODELS[name]()
    x, y = data()
    eps = 0.05
    fused_bm = BoundedModule(CrossEntropyWrapper(model), (x, y), bound_opts={"loss_fusion": True})
    fused = fused_robust_loss(fused_bm, ball(x, eps), y, "IBP")
    plain = BoundedModule(model, x)
    lb, _ = plain.compute_bounds(x=(ball(x, eps),), C=margin_matrix(y, N_CLASSES).to(DT), method="IBP")
    unfused = margin_robust_loss(lb)
    torch.testing.assert_close(fused, unfused, rtol=1e-10, atol=1e-10)
    worst = _worst_ce(model, x, y, eps)
    assert float(unfused.detach()) >= float(worst.mean()) - 1e-9


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fused_and_unfused_crown_ibp_are_both_upper_bounds(name, capsys):
    """No order between the two is asserted (none holds in general); the measured one is printed."""
    model = MODELS[name]()
    x, y = data()
    eps = 0.05
    fused_bm = BoundedModule(CrossEntropyWrapper(model), (x, y), bound_opts={"loss_fusion": True})
    ub, m = fused_upper_bound(fused_bm, ball(x, eps), y, "CROWN-IBP")
    fused = (torch.log(ub) + m).detach()
    plain = BoundedModule(model, x)
    lb, _ = plain.compute_bounds(x=(ball(x, eps),), C=margin_matrix(y, N_CLASSES).to(DT), method="CROWN-IBP")
    unfused = torch.logsumexp(torch.cat([torch.zeros_like(lb[:, :1]), -lb], 1), 1).detach()
    worst = _worst_ce(model, x, y, eps)
    assert bool((fused >= worst - 1e-9).all()) and bool((unfused >= worst - 1e-9).all())
    with capsys.disabled():
        print(f"\n[{name}] CROWN-IBP robust CE: fused {float(fused.mean()):.4f}, unfused "
              f"{float(unfused.mean()):.4f}, fused <= unfused on {int((fused <= unfused).sum())}/{len(y)}")


def test_gather_alone_is_exact_in_ibp_and_sound_everywhere():
    class Pick(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(12, N_CLASSES).to(DT)

        def forward(self, x, idx):
            return torch.relu(self.lin(x.flatten(1))).gather(1, idx)

    torch.manual_seed(4)
    model = Pick()
    x, y = data()
    idx = torch.stack([y, (y + 1) % N_CLASSES], 1)
    bm = BoundedModule(model, (x, idx))
    for method in ("IBP", "CROWN-IBP", "CROWN", "forward"):

        def bound_fn(box, method=method):
            return bm.compute_bounds(x=(bounded(box.center, box.lower, box.upper), idx), method=method)

        check_bounds_sound(lambda z: model(z, tile(idx, z)), x, 0.1, bound_fn, n_samples=8, pgd_steps=5)
    lb, ub = bm.compute_bounds(x=(ball(x, 0.1), idx), method="IBP")
    full = BoundedModule(nn.Sequential(model.lin, nn.ReLU()), x.flatten(1))
    flb, fub = full.compute_bounds(x=(ball(x.flatten(1), 0.1),), method="IBP")
    torch.testing.assert_close(lb, flb.gather(1, idx))
    torch.testing.assert_close(ub, fub.gather(1, idx))


def test_gather_along_the_batch_dimension_is_refused():
    class Bad(nn.Module):
        def forward(self, x, idx):
            return x.gather(0, idx)

    x = torch.rand(3, 4, dtype=DT)
    idx = torch.zeros(3, 4, dtype=torch.long)
    with pytest.raises(UnsupportedOperationError, match="gather"):
        BoundedModule(Bad(), (x, idx)).compute_bounds(x=(ball(x, 0.1), idx), method="IBP")


def test_fused_loss_needs_the_option_and_a_supported_method():
    model = mlp()
    x, y = data()
    bm = BoundedModule(CrossEntropyWrapper(model), (x, y))
    with pytest.raises(ValueError, match="loss_fusion"):
        fused_robust_loss(bm, ball(x, 0.1), y, "IBP")
    bm.set_bound_opts({"loss_fusion": True})
    with pytest.raises(ValueError, match="IBP"):
        fused_robust_loss(bm, ball(x, 0.1), y, "forward")
