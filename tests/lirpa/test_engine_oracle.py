"""lirpa's engine against the naive dense oracle (tests/lirpa/dense_reference.py), float64, rtol 1e-5:
IBP, CROWN (every ReLU option), CROWN-IBP and forward mode on random Sequential models of Linear, Conv2d,
BatchNorm (eval), ReLU, LeakyReLU, Flatten and input normalisation, with and without a spec C, under
L∞ and (for MLPs) L2 / L1 balls."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from certcore.testing import randomize_batchnorm
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm

_spec = importlib.util.spec_from_file_location(
    "dense_reference", Path(__file__).with_name("dense_reference.py")
)
dr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dr)

DT = torch.float64


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 9), nn.LeakyReLU(0.2), nn.Linear(9, 4)
    )


def _mlp_bn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        dr.Normalize(
            torch.tensor([0.1, -0.2, 0.3, 0.0, 0.5, -0.1]), torch.tensor([0.5, 1.5, 2.0, 1.0, 0.7, 1.2])
        ),
        nn.Linear(6, 12),
        nn.BatchNorm1d(12),
        nn.ReLU(),
        nn.Linear(12, 8),
        nn.ReLU(),
        nn.Linear(8, 5),
    )


def _cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        dr.Normalize(torch.tensor([0.2, -0.1]).reshape(2, 1, 1), torch.tensor([0.5, 2.0]).reshape(2, 1, 1)),
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=1, padding=2, dilation=2, groups=2),
        nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 7),
        nn.ReLU(),
        nn.Linear(7, 3),
    )


MODELS = {"mlp": (_mlp, (6,)), "mlp-bn": (_mlp_bn, (6,)), "cnn": (_cnn, (2, 7, 7))}


def _setup(name, seed=0, batch=3, eps=0.2):
    build, shape = MODELS[name]
    model = build(seed)
    randomize_batchnorm(model, torch.Generator().manual_seed(seed))
    model = model.to(DT).eval()
    gen = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(batch, *shape, generator=gen, dtype=DT)
    out = model(x)
    C = torch.randn(batch, 2, out.shape[1], generator=gen, dtype=DT)
    return model, x, eps, C


def _close(a, b):
    torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("with_C", [False, True])
def test_linf_all_methods_match_oracle(name, with_C):
    model, x, eps, C = _setup(name)
    C = C if with_C else None
    bm = BoundedModule(model, x)
    xb = BoundedTensor(x, PerturbationLpNorm(norm=math.inf, x_L=x - eps, x_U=x + eps))
    xl, xu = x - eps, x + eps
    cases = {
        "IBP": dr.ibp(model, xl, xu, C),
        "CROWN": dr.crown(model, xl, xu, C),
        "CROWN-IBP": dr.crown(model, xl, xu, C, ibp_intermediate=True),
        "forward": dr.forward_mode(model, xl, xu, C),
    }
    for method, (ref_lb, ref_ub) in cases.items():
        lb, ub = bm.compute_bounds(x=(xb,), C=C, method=method)
        _close(lb.reshape(ref_lb.shape), ref_lb)
        _close(ub.reshape(ref_ub.shape), ref_ub)


@pytest.mark.parametrize("option", ["adaptive", "same-slope", "zero-lb", "one-lb"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_crown_relu_options_match_oracle(name, option):
    model, x, eps, C = _setup(name, seed=1)
    bm = BoundedModule(model, x, bound_opts={"activation_bound_option": option})
    xb = BoundedTensor(x, PerturbationLpNorm(eps))
    for method, ibp_int in (("CROWN", False), ("CROWN-IBP", True)):
        lb, ub = bm.compute_bounds(x=(xb,), C=C, method=method)
        ref_lb, ref_ub = dr.crown(model, x - eps, x + eps, C, relu_option=option, ibp_intermediate=ibp_int)
        _close(lb, ref_lb)
        _close(ub, ref_ub)
    lb, ub = bm.compute_bounds(x=(xb,), C=C, method="forward")
    ref = dr.forward_mode(model, x - eps, x + eps, C, relu_option=option)
    _close(lb, ref[0])
    _close(ub, ref[1])


@pytest.mark.parametrize("norm", [2, 1])
@pytest.mark.parametrize("with_C", [False, True])
def test_lp_balls_match_oracle(norm, with_C):
    model, x, _, C = _setup("mlp", seed=2)
    C = C if with_C else None
    eps = 0.4 if norm == 2 else 0.6
    bm = BoundedModule(model, x)
    xb = BoundedTensor(x, PerturbationLpNorm(eps=eps, norm=norm))
    kw = {"norm": norm, "eps": eps, "x0": x}
    cases = {
        "IBP": dr.ibp(model, None, None, C, **kw),
        "CROWN": dr.crown(model, None, None, C, **kw),
        "CROWN-IBP": dr.crown(model, None, None, C, ibp_intermediate=True, **kw),
        "forward": dr.forward_mode(model, None, None, C, **kw),
    }
    for method, (ref_lb, ref_ub) in cases.items():
        lb, ub = bm.compute_bounds(x=(xb,), C=C, method=method)
        _close(lb, ref_lb)
        _close(ub, ref_ub)


def test_intermediate_bounds_match_oracle_per_relu():
    model, x, eps, _ = _setup("cnn", seed=3)
    bm = BoundedModule(model, x)
    xb = BoundedTensor(x, PerturbationLpNorm(eps))
    for method, key in (
        ("CROWN", "crown"),
        ("CROWN-IBP", "crown-ibp"),
        ("forward", "forward"),
        ("IBP", "ibp"),
    ):
        bm.compute_bounds(x=(xb,), method=method)
        ours = bm.relu_preactivation_bounds()
        ref = dr.pre_activation_bounds(model, x - eps, x + eps, method=key)
        relu_paths = [str(i) for i, m in enumerate(model) if isinstance(m, nn.ReLU)]
        relu_refs = [
            r
            for r, m in zip(ref, [m for m in model if isinstance(m, (nn.ReLU, nn.LeakyReLU))])
            if isinstance(m, nn.ReLU)
        ]
        assert sorted(ours) == sorted(relu_paths)
        for path, (lo, hi) in zip(relu_paths, relu_refs, strict=True):
            _close(ours[path].lower.reshape(lo.shape), lo)
            _close(ours[path].upper.reshape(hi.shape), hi)
