"""PerturbationLpNorm and BoundedTensor: norms, per-sample eps, zero-width boxes, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm

DT = torch.float64


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).to(DT)


@pytest.mark.parametrize("norm", [np.inf, float("inf"), "inf", math.inf])
def test_linf_spellings_and_eps_vs_box(norm):
    model = _model()
    x = torch.randn(3, 4, dtype=DT)
    bm = BoundedModule(model, x)
    a = bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.2, norm=norm)),))
    b = bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(norm=norm, x_L=x - 0.2, x_U=x + 0.2)),))
    torch.testing.assert_close(a, b)
    # x_L/x_U take priority over eps
    c = bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(5.0, norm=norm, x_L=x - 0.2, x_U=x + 0.2)),))
    torch.testing.assert_close(a, c)


def test_per_sample_eps_and_zero_width():
    model = _model()
    x = torch.randn(3, 4, dtype=DT)
    bm = BoundedModule(model, x)
    eps = torch.tensor([0.0, 0.1, 0.3], dtype=DT)
    for norm in (math.inf, 2, 1):
        lb, ub = bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(eps, norm=norm)),), method="CROWN")
        torch.testing.assert_close(lb[0], model(x)[0])
        torch.testing.assert_close(ub[0], model(x)[0])
        for i in (1, 2):
            single = PerturbationLpNorm(float(eps[i]), norm=norm)
            lb_i, ub_i = bm.compute_bounds(x=(BoundedTensor(x[i : i + 1], single),), method="CROWN")
            torch.testing.assert_close(lb[i], lb_i[0])
            torch.testing.assert_close(ub[i], ub_i[0])
    point = PerturbationLpNorm(x_L=x, x_U=x)
    for method in ("IBP", "CROWN", "forward"):
        lb, ub = bm.compute_bounds(x=(BoundedTensor(x, point),), method=method)
        torch.testing.assert_close(lb, model(x))
        torch.testing.assert_close(ub, model(x))


def test_lp_ball_is_inside_linf_box_bounds():
    model = _model()
    x = torch.randn(2, 4, dtype=DT)
    bm = BoundedModule(model, x)
    widths = {}
    for norm in (1, 2, math.inf):
        lb, ub = bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.3, norm=norm)),), method="CROWN")
        widths[norm] = float((ub - lb).detach().sum())
    assert widths[1] <= widths[2] <= widths[math.inf]


def test_validation_messages():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="both x_L and x_U"):
        PerturbationLpNorm(x_L=x)
    with pytest.raises(ValueError, match="x_U must be finite"):
        PerturbationLpNorm(x_L=x, x_U=x + torch.inf)
    with pytest.raises(ValueError, match="same shape"):
        PerturbationLpNorm(x_L=x, x_U=x[:1])
    with pytest.raises(ValueError, match="eps"):
        PerturbationLpNorm(torch.tensor([0.1, -0.1]))
    bm = BoundedModule(nn.Linear(4, 2), x)
    with pytest.raises(ValueError, match="per-sample"):
        bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(torch.ones(4), norm=2)),))
    with pytest.raises(ValueError, match="x must be finite"):
        bm.compute_bounds(x=(BoundedTensor(x.clone().fill_(math.nan), PerturbationLpNorm(0.1)),))
    with pytest.raises(TypeError, match="PerturbationLpNorm"):
        BoundedTensor(x, ptb=0.1)


def test_bounded_tensor_keeps_storage_and_autograd():
    x = torch.randn(2, 3, requires_grad=True)
    xb = BoundedTensor(x, PerturbationLpNorm(0.1))
    assert isinstance(xb, torch.Tensor) and xb.ptb.eps == 0.1
    y = (xb * 2).sum()
    assert type(y) is torch.Tensor
    y.backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))
    assert "BoundedTensor" in repr(xb)
