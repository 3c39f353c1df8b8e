"""Patches mode (``conv_mode="patches"``) gives matrix mode's bounds on CNNs with stride, padding, dilation,
groups, BatchNorm and residual additions, and its dense/windowed helpers are exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm
from lirpa.ops.patches import Patches

DT = torch.float64


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.b1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=2)
        self.c3 = nn.Conv2d(6, 6, 1)
        self.c4 = nn.Conv2d(6, 8, 4, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.c2(h) + self.c3(h))
        h = torch.relu(self.c4(h))
        return self.fc(h.flatten(1))


def _models():
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, dilation=1), nn.BatchNorm2d(6), nn.LeakyReLU(0.1),
        nn.Conv2d(6, 6, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1), groups=3), nn.Sigmoid(),
        nn.Conv2d(6, 4, 2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3),
    )
    return [("plain", plain, (2, 2, 9, 9)), ("residual", Residual(), (2, 3, 8, 8))]


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("norm", [float("inf"), 2.0])
@pytest.mark.parametrize("method", ["CROWN", "CROWN-IBP", "alpha-CROWN"])
@pytest.mark.parametrize("case", range(2))
def test_patches_equal_matrix(case, method, norm):
    name, model, shape = _models()[case]
    model = model.to(DT).eval()
    _randomize_bn(model)
    x = torch.rand(*shape, dtype=DT)
    eps = 0.05 if norm == float("inf") else 0.3
    results = {}
    for mode in ("matrix", "patches"):
        bm = BoundedModule(model, x, bound_opts={"conv_mode": mode, "optimize_bound_args": {"iteration": 3}})
        xb = BoundedTensor(x, PerturbationLpNorm(eps, norm=norm))
        lb, ub = bm.compute_bounds(x=(xb,), method=method)
        inter = bm.intermediate_bounds()
        results[mode] = (lb, ub, inter)
    (lm, um, im), (lp, up, ip) = results["matrix"], results["patches"]
    torch.testing.assert_close(lp, lm, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(up, um, rtol=1e-5, atol=1e-8)
    assert im.keys() == ip.keys()
    for k in im:
        torch.testing.assert_close(ip[k].lower, im[k].lower, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(ip[k].upper, im[k].upper, rtol=1e-5, atol=1e-8)


def test_patches_is_default_and_sparse_rows_match():
    _, model, shape = _models()[0]
    model = model.to(DT).eval()
    x = torch.rand(*shape, dtype=DT)
    assert BoundedModule(model, x).bound_opts["conv_mode"] == "patches"
    out = {}
    for mode in ("matrix", "patches"):
        bm = BoundedModule(model, x, bound_opts={"conv_mode": mode, "crown_batch_size": 7})
        out[mode] = bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.02)),), method="CROWN")
    torch.testing.assert_close(out["patches"], out["matrix"], rtol=1e-5, atol=1e-8)


def test_patches_to_dense_and_gather():
    torch.manual_seed(1)
    shape = (3, 5, 6)
    rows = torch.tensor([0, 7, 29, 44, 89])
    P = Patches.one_hot(rows, 2, shape, torch.zeros((), dtype=DT))
    dense = P.to_dense()
    eye = torch.eye(90, dtype=DT)[rows].reshape(5, 1, *shape).expand(5, 2, *shape)
    torch.testing.assert_close(dense, eye)
    # a window hanging over every border: entries outside the image are ignored by gather/to_dense
    p = torch.randn(2, 1, 3, 4, 4, dtype=DT)
    Q = Patches(p, torch.tensor([-2, 3]), torch.tensor([-1, 4]), shape)
    Q = Q.with_patches(Q.patches * Q.mask(p))
    t = torch.randn(1, *shape, dtype=DT)
    windowed = (Q.patches * Q.gather(t)).sum((2, 3, 4))
    torch.testing.assert_close(windowed, (Q.to_dense() * t).sum((2, 3, 4)))


def test_patches_hold_less_than_the_dense_matrix():
    """The coefficient memory of one intermediate pass: patches at the input vs the dense matrix."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).to(DT)
    x = torch.rand(2, 3, 16, 16, dtype=DT)
    bm = BoundedModule(model, x, bound_opts={"conv_mode": "patches"})
    bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.01)),), method="CROWN")
    node = bm._node[bm._output]
    rows = torch.arange(8 * 16 * 16)
    A0 = Patches.one_hot(rows, 2, (8, 16, 16), x)
    seen = []
    original = Patches.gather

    def spy(self, t):
        seen.append(self.patches.numel())
        return original(self, t)

    Patches.gather = spy
    try:
        bm._backward(node, A0, True, True)
    finally:
        Patches.gather = original
    dense = len(rows) * 2 * 3 * 16 * 16
    assert seen and max(seen) * 5 < dense  # 5x5 windows of 3 channels vs 16x16 images
