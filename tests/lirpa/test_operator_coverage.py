"""Every operator of the supported list has an IBP, a backward (CROWN) and a forward rule, each sound
(float64, sampled + corner + PGD points). One row per operator (or spelling); each builds a tiny model
``pre -> op -> post`` around it, so nonlinear ops see non-trivial, partly unstable input bounds.

The ℓ∞-distance layers (modules with ``interval_forward``) have an IBP rule only: their rows check IBP
and that backward / forward refuse with :class:`UnsupportedOperationError`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certcore.bounds import Interval
from certcore.testing import check_bounds_sound, freeze_batch_stats, make_zoo_model
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm, UnsupportedOperationError
from lirpa.ops.pooling import MaxPool2d

DT = torch.float64
RULES = {"IBP": "IBP", "backward": "CROWN", "forward": "forward"}


class Wrap(nn.Module):
    """``post(op(pre(x)))``; ``op`` is a module (a leaf) or a function traced through."""

    def __init__(self, op, pre: nn.Module, post: nn.Module):
        super().__init__()
        self.pre, self.post = pre, post
        if isinstance(op, nn.Module):
            self.op = op
        else:
            self.fn = op

    def forward(self, x):
        h = self.pre(x)
        h = self.op(h) if hasattr(self, "op") else self.fn(h)
        return self.post(h)


class TwoBranch(nn.Module):
    """Ops of two perturbed tensors: ``fn(a(x), b(x))``."""

    def __init__(self, fn, n_in=4, n_mid=5, n_out=3):
        super().__init__()
        self.a, self.b, self.fn = nn.Linear(n_in, n_mid), nn.Linear(n_in, n_mid), fn
        self.out = nn.LazyLinear(n_out)

    def forward(self, x):
        return self.out(self.fn(self.a(x), self.b(x)).flatten(1))


class Pool1d(nn.Module):
    """A 1-D pooling module on ``(B, 2, 7)`` features."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.fc, self.pool, self.out = nn.Linear(4, 14), pool, nn.LazyLinear(3)

    def forward(self, x):
        return self.out(self.pool(self.fc(x).reshape(-1, 2, 7)).flatten(1))


def mlp(op, n_in=4, n_mid=6):
    return Wrap(op, nn.Linear(n_in, n_mid), nn.LazyLinear(3)), (n_in,)


def cnn(op, c_in=2, c_mid=3, size=6):
    post = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    return Wrap(op, nn.Conv2d(c_in, c_mid, 3, padding=1), post), (c_in, size, size)


M = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=DT)
MEAN = torch.tensor([0.3, -0.2], dtype=DT).reshape(1, 2, 1, 1)
STD = torch.tensor([0.5, 2.0], dtype=DT).reshape(1, 2, 1, 1)

# name -> () -> (model, per-sample input shape); eps 0.1 on inputs ~ N(0, 1)
OPS = {
    "nn.Linear": lambda: (nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3)), (4,)),
    "F.linear": lambda: mlp(lambda h: F.linear(h, M.t(), torch.ones(5, dtype=DT))),
    "x @ M": lambda: mlp(lambda h: h @ M),
    "torch.matmul": lambda: mlp(lambda h: torch.matmul(h, M)),
    "nn.Conv2d": lambda: cnn(nn.Conv2d(3, 4, 3, stride=2, padding=1)),
    "F.conv2d (dilation, groups)": lambda: cnn(
        lambda h: F.conv2d(h, torch.ones(3, 1, 2, 2, dtype=DT) * 0.3, padding=2, dilation=2, groups=3)
    ),
    "BatchNorm1d (eval)": lambda: mlp(nn.BatchNorm1d(6)),
    "BatchNorm2d (eval)": lambda: cnn(nn.BatchNorm2d(3)),
    "BatchNorm2d (train)": lambda: cnn(nn.BatchNorm2d(3)),
    "ReLU (adaptive)": lambda: mlp(nn.ReLU()),
    "ReLU (same-slope)": lambda: mlp(nn.ReLU()),
    "ReLU (zero-lb)": lambda: mlp(nn.ReLU()),
    "ReLU (one-lb)": lambda: mlp(nn.ReLU()),
    "F.relu": lambda: cnn(F.relu),
    "LeakyReLU": lambda: mlp(nn.LeakyReLU(0.1)),
    "F.leaky_relu": lambda: mlp(lambda h: F.leaky_relu(h, 0.3)),
    "Sigmoid": lambda: mlp(nn.Sigmoid()),
    "Tanh": lambda: mlp(nn.Tanh()),
    "exp": lambda: mlp(torch.exp),
    "log": lambda: mlp(lambda h: torch.log(h * h + 0.5)),
    "square": lambda: mlp(torch.square),
    "reciprocal": lambda: mlp(lambda h: 1 / (torch.exp(h) + 1.0)),
    "a + b": lambda: (TwoBranch(lambda a, b: a + b), (4,)),
    "a - b": lambda: (TwoBranch(lambda a, b: a - b), (4,)),
    "+ const": lambda: mlp(lambda h: h + torch.arange(6, dtype=DT)),
    "const - x": lambda: mlp(lambda h: 2.0 - h),
    "-x": lambda: mlp(lambda h: -h),
    "* const": lambda: mlp(lambda h: h * torch.linspace(-2, 2, 6, dtype=DT)),
    "/ const": lambda: mlp(lambda h: h / 3.0),
    "input normalization": lambda: (
        Wrap(lambda x: (x - MEAN) / STD, nn.Identity(), nn.Sequential(nn.Flatten(), nn.LazyLinear(3))),
        (2, 5, 5),
    ),
    "nn.Flatten": lambda: cnn(nn.Flatten()),
    "torch.flatten": lambda: cnn(lambda h: torch.flatten(h, 2)),
    "squeeze / unsqueeze": lambda: mlp(lambda h: h.unsqueeze(1).unsqueeze(-1).squeeze(-1)),
    "sum / mean": lambda: cnn(lambda h: torch.cat([h.sum(dim=1), h.mean(dim=(2,), keepdim=True)[:, 0]], 1)),
    "reshape": lambda: cnn(lambda h: h.reshape(h.shape[0], 3, 36)),
    "view": lambda: cnn(lambda h: h.view(-1, 108)),
    "permute": lambda: cnn(lambda h: h.permute(0, 2, 3, 1)),
    "transpose": lambda: cnn(lambda h: h.transpose(1, 3)),
    "torch.cat": lambda: (TwoBranch(lambda a, b: torch.cat([a, torch.ones_like(a[:, :2]), b], 1)), (4,)),
    "slice": lambda: cnn(lambda h: h[:, 1:, ::2, 1:-1]),
    "AvgPool2d": lambda: cnn(nn.AvgPool2d(3, stride=2, padding=1)),
    "F.avg_pool2d": lambda: cnn(lambda h: F.avg_pool2d(h, 2)),
    "AdaptiveAvgPool2d": lambda: cnn(nn.AdaptiveAvgPool2d((2, 3))),
    "AvgPool1d": lambda: cnn(lambda h: nn.functional.avg_pool1d(h.flatten(2), 3)),
    "MaxPool2d (kernel == stride)": lambda: cnn(nn.MaxPool2d(2)),
    "MaxPool2d (overlapping, padding)": lambda: cnn(nn.MaxPool2d(3, stride=1, padding=1)),
    "F.max_pool2d (dilation, ceil_mode)": lambda: cnn(
        lambda h: F.max_pool2d(h, 2, stride=2, padding=1, dilation=2, ceil_mode=True), size=7
    ),
    "torch.max_pool2d (stride omitted)": lambda: cnn(lambda h: torch.max_pool2d(h, (2, 3))),
    "MaxPool1d": lambda: cnn(lambda h: F.max_pool1d(h.flatten(2), 4, stride=3, padding=2)),
    "nn.MaxPool1d": lambda: (Pool1d(nn.MaxPool1d(3, stride=2, padding=1)), (4,)),
    "nn.AdaptiveMaxPool1d": lambda: (Pool1d(nn.AdaptiveMaxPool1d(4)), (4,)),
    "AdaptiveMaxPool2d": lambda: cnn(nn.AdaptiveMaxPool2d((4, 3))),
    "F.adaptive_max_pool1d": lambda: cnn(lambda h: F.adaptive_max_pool1d(h.flatten(2), 5)),
    "Identity": lambda: mlp(nn.Identity()),
    "Dropout (eval)": lambda: mlp(nn.Dropout(0.5)),
    "F.dropout (training=False)": lambda: mlp(lambda h: F.dropout(h, 0.5, training=False)),
    "Dropout2d (eval)": lambda: cnn(nn.Dropout2d(0.5)),
}


def _build(name):
    torch.manual_seed(sum(map(ord, name)))
    model, shape = OPS[name]()
    model = model.to(DT)
    x = torch.randn(3, *shape, dtype=DT)
    model(x)  # materialise lazy layers
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    if "(train)" in name:
        model.train()
    opts = {}
    if name.startswith("ReLU ("):
        opts["activation_bound_option"] = name[len("ReLU (") : -1]
    return model, x, opts


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("name", list(OPS))
def test_operator_rule_is_sound(name, rule):
    model, x, opts = _build(name)
    bm = BoundedModule(model, x, bound_opts=opts)
    method = RULES[rule]

    def bound_fn(box):
        xb = BoundedTensor(box.center, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
        return bm.compute_bounds(x=(xb,), method=method)

    fn = freeze_batch_stats(model, x) if model.training else model
    report = check_bounds_sound(fn, x, 0.1, bound_fn, n_samples=16, pgd_steps=4, pgd_coords=4)
    assert math.isfinite(report.mean_width)


def _expected_rule(name: str) -> str:
    """The bound rule (class name, or part of it) each row is about."""
    table = {
        "Linear": "Linear",
        "linear": "Linear",
        "@": "Linear",
        "matmul": "Linear",
        "Conv2d": "Conv2d",
        "conv2d": "Conv2d",
        "BatchNorm": "ScaleShift",
        "LeakyReLU": "LeakyReLU",
        "leaky_relu": "LeakyReLU",
        "ReLU": "ReLU",
        "relu": "ReLU",
        "Sigmoid": "Sigmoid",
        "Tanh": "Tanh",
        "exp": "Exp",
        "log": "Log",
        "square": "Square",
        "reciprocal": "Reciprocal",
        "a + b": "AddSub",
        "a - b": "AddSub",
        "const": "ScaleShift",
        "-x": "ScaleShift",
        "normalization": "ScaleShift",
        "latten": "Reshape",
        "reshape": "Reshape",
        "view": "Reshape",
        "squeeze": "Reshape",
        "sum": "PerSampleLinear",
        "permute": "PerSampleLinear",
        "transpose": "PerSampleLinear",
        "cat": "Cat",
        "slice": "PerSampleLinear",
        "AvgPool": "PerSampleLinear",
        "avg_pool": "PerSampleLinear",
        "MaxPool": "MaxPool2d",
        "max_pool": "MaxPool2d",
        "Identity": "Identity",
        "ropout": "Identity",
    }
    return next(rule for key, rule in table.items() if key in name)


@pytest.mark.parametrize("name", list(OPS))
def test_row_is_bound_by_the_intended_rule(name):
    """Each row really exercises its operator's rule (not some other spelling traced through)."""
    model, x, opts = _build(name)
    bm = BoundedModule(model, x, bound_opts=opts)
    rules = [type(n.op).__name__ for n in bm._nodes if n.op is not None]
    assert any(_expected_rule(name) in r for r in rules), (name, rules)


@pytest.mark.parametrize("norm", [2])
@pytest.mark.parametrize("name", ["MaxPool2d (overlapping, padding)", "F.max_pool2d (dilation, ceil_mode)"])
def test_maxpool_lp_balls_sound(name, norm):
    model, x, opts = _build(name)
    bm = BoundedModule(model, x, bound_opts=opts)
    eps = 0.3
    for method in ("IBP", "CROWN", "CROWN-IBP", "forward", "forward+backward"):

        def bound_fn(box, method=method):
            return bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(eps, norm=norm)),), method=method)

        check_bounds_sound(model, x, eps, bound_fn, norm=str(norm), n_samples=16, pgd_steps=4, pgd_coords=4)


def test_ibp_only_distance_layer():
    linfdist = pytest.importorskip("linfdist")
    torch.manual_seed(0)
    model = nn.Sequential(linfdist.NormDist(4, 6, mean_shift=False), nn.Linear(6, 3)).to(DT).eval()
    x = torch.randn(3, 4, dtype=DT)
    bm = BoundedModule(model, x)

    def bound_fn(box):
        xb = BoundedTensor(box.center, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
        return bm.compute_bounds(x=(xb,), method="IBP")

    check_bounds_sound(model, x, 0.1, bound_fn, n_samples=16, pgd_steps=4)
    xb = BoundedTensor(x, PerturbationLpNorm(0.1))
    for method in ("CROWN", "CROWN-IBP", "forward"):
        with pytest.raises(UnsupportedOperationError, match="only an IBP rule"):
            bm.compute_bounds(x=(xb,), method=method)


def test_maxpool_relaxation_lines_enclose_the_max():
    """Pointwise: for random boxes and points inside, ``x_a <= max <= s x_m + b``; exact windows are
    exact and the upper line never exceeds the IBP constant."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 2, 5, 5, dtype=DT)
    model = Wrap(nn.MaxPool2d(3, stride=1, padding=1), nn.Identity(), nn.Identity())
    bm = BoundedModule(model, x)
    op = next(n.op for n in bm._nodes if isinstance(n.op, MaxPool2d))
    for trial in range(20):
        center = torch.randn(4, 2, 5, 5, generator=g, dtype=DT)
        width = torch.rand(4, 2, 5, 5, generator=g, dtype=DT) * (0.05 if trial % 2 else 1.0)
        if trial == 3:
            width[0] = 0.0
        box = Interval(center - width, center + width, check=False)
        op.bind({op.inputs[0]: center, op.node.name: F.max_pool2d(center, 3, 1, 1)})
        a, m, s, b = op.relax(box)
        assert bool(((s >= 0) & (s <= 1)).all())
        pts = box.lower + (box.upper - box.lower) * torch.rand(64, *center.shape, generator=g, dtype=DT)
        pts = torch.cat([pts, box.lower[None], box.upper[None]])
        for p in pts:
            y = F.max_pool2d(p, 3, 1, 1).reshape(4, -1)
            flat = p.reshape(4, -1)
            assert bool((flat.gather(1, a) <= y + 1e-12).all())
            assert bool((y <= s * flat.gather(1, m) + b + 1e-12).all())
        ibp_upper = F.max_pool2d(box.upper, 3, 1, 1).reshape(4, -1)
        upper_at_max = s * box.upper.reshape(4, -1).gather(1, m) + b
        assert bool((upper_at_max <= ibp_upper + 1e-12).all())
        if trial == 3:
            assert bool((s[0] == 1).all() and (b[0] == 0).all())


def test_maxpool_ibp_equals_certcore():
    from certcore.bounds import ibp

    model, shape = make_zoo_model("cnn-maxpool", dtype=DT)
    x = torch.rand(3, *shape, dtype=DT)
    box = Interval.from_eps(x, 0.05)
    bm = BoundedModule(model, x)
    xb = BoundedTensor(x, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
    lb, ub = bm.compute_bounds(x=(xb,), method="IBP")
    ref = ibp(model, box)
    assert torch.equal(lb, ref.lower) and torch.equal(ub, ref.upper)
    for method in ("CROWN", "forward", "alpha-CROWN"):
        lb2, ub2 = bm.compute_bounds(x=(xb,), method=method)
        assert bool((lb2 <= model(x)).all() and (model(x) <= ub2).all())


def test_maxpool_refusals():
    x = torch.randn(2, 3, 4, 4)

    class WithIndices(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2, return_indices=True)

        def forward(self, x):
            return self.pool(x)[0]

    class Functional(nn.Module):
        def forward(self, x):
            return F.max_pool2d(x, 2, return_indices=True)[0]

    class ThreeD(nn.Module):
        def forward(self, x):
            return F.max_pool3d(x.unsqueeze(1), 2)

    for model, match in (
        (WithIndices(), "return_indices"),
        (Functional(), "max_pool2d"),
        (ThreeD(), "max_pool3d"),
    ):
        with pytest.raises(UnsupportedOperationError, match=match):
            bm = BoundedModule(model, x)
            bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.1)),), method="IBP")


@pytest.mark.parametrize(
    "method", ["IBP", "CROWN", "CROWN-IBP", "forward", "forward+backward", "alpha-CROWN"]
)
def test_certcore_maxpool_zoo_model_sound(method):
    model, shape = make_zoo_model("cnn-maxpool", dtype=DT)
    x = torch.rand(2, *shape, dtype=DT)
    bm = BoundedModule(model, x, bound_opts={"optimize_bound_args": {"iteration": 3}})

    def bound_fn(box):
        xb = BoundedTensor(box.center, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
        return bm.compute_bounds(x=(xb,), method=method)

    check_bounds_sound(model, x, 0.05, bound_fn, n_samples=8, pgd_steps=3, pgd_coords=4)


@pytest.mark.parametrize("method", ["CROWN", "forward"])
def test_maxpool_bounds_are_differentiable(method):
    """Gradients of CROWN / forward bounds through a max pool (its relaxation depends on the intermediate
    bounds) against float64 finite differences."""
    model, x, _ = _build("MaxPool2d (overlapping, padding)")
    bm = BoundedModule(model, x)
    w = model.pre.weight

    def loss():
        xb = BoundedTensor(x, PerturbationLpNorm(x_L=x - 0.1, x_U=x + 0.1))
        lb, ub = bm.compute_bounds(x=(xb,), method=method)
        return (ub - 2 * lb).sum()

    model.zero_grad()
    loss().backward()
    assert w.grad is not None and bool(torch.isfinite(w.grad).all())
    h = 1e-6
    with torch.no_grad():
        w[0, 1, 1, 1] += h
        plus = loss().item()
        w[0, 1, 1, 1] -= 2 * h
        minus = loss().item()
        w[0, 1, 1, 1] += h
    assert w.grad[0, 1, 1, 1].item() == pytest.approx((plus - minus) / (2 * h), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "pool, shape",
    [
        (nn.MaxPool2d(2), (3, 6, 6)),
        (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 7, 6)),
        (nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1)), (2, 6, 7)),
        (nn.MaxPool1d(4, stride=3, padding=2, ceil_mode=True), (3, 11)),
        (nn.AdaptiveMaxPool2d((4, 3)), (2, 7, 5)),
        (nn.AdaptiveMaxPool2d((None, 2)), (2, 5, 7)),
        (nn.AdaptiveMaxPool1d(5), (3, 7)),
    ],
)
def test_maxpool_windows_reproduce_the_pooling(pool, shape):
    """The window table the rules use gives exactly the pooling's output (max over each window)."""
    x = torch.randn(3, *shape, dtype=DT)
    bm = BoundedModule(Wrap(pool, nn.Identity(), nn.Identity()), x)
    op = next(n.op for n in bm._nodes if isinstance(n.op, MaxPool2d))
    bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.1)),), method="IBP")
    y = pool(x)
    torch.testing.assert_close(op._gather(x).amax(1), y.reshape(3, -1), rtol=0, atol=0)
    lb, ub = bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.0)),), method="CROWN")
    torch.testing.assert_close(lb, y, rtol=0, atol=1e-12)
    torch.testing.assert_close(ub, y, rtol=0, atol=1e-12)
