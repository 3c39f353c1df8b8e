"""Every operator family, functional forms included, is sound under every method (float64), and the
structural ops (pool, cat, slicing, permute, sum/mean, reciprocal, train-mode BatchNorm) agree with
certcore's IBP where certcore has a rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds import Interval, ibp
from certcore.testing import check_bounds_sound, freeze_batch_stats, make_zoo_model
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm, UnsupportedOperationError

DT = torch.float64
METHODS = ("IBP", "CROWN", "CROWN-IBP", "forward", "forward+backward", "alpha-CROWN")


class Functional(nn.Module):
    """F.conv2d, F.linear and x @ M with parameters, avg pool, slicing, permute, transpose, cat with a
    constant, mean, torch.flatten."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2, 3, 3) * 0.5)
        self.b = nn.Parameter(torch.randn(3) * 0.1)
        self.m = nn.Parameter(torch.randn(12, 5) * 0.3)
        self.lin = nn.Linear(5, 4)

    def forward(self, x):
        h = F.relu(F.conv2d(x, self.w, self.b, stride=1, padding=1))
        h = F.avg_pool2d(h, 2)  # (B, 3, 3, 3)
        h = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)  # (B, 4, 3, 3)
        h = h.permute(0, 2, 3, 1).transpose(1, 2)[:, 1:, :, :]  # (B, 2, 3, 4)
        h = h.mean(dim=1)  # (B, 3, 4)
        h = torch.flatten(h, 1) @ self.m  # (B, 5)
        return F.linear(torch.tanh(h), self.lin.weight, self.lin.bias)


class Branches(nn.Module):
    """Two perturbed branches concatenated, a sum over features, reciprocal on a positive range."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 2)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.cat([torch.sigmoid(self.a(x)), F.leaky_relu(self.b(x), 0.2)], dim=1)
        s = h.sum(dim=1, keepdim=True)
        r = 1 / (torch.exp(h[:, :1]) + 1.0)
        return self.out(torch.cat([h, r * 2.0 - s], dim=1))


def _sound(model, x, eps, method, **kw):
    bm = BoundedModule(model, x)
    bm.set_bound_opts({"optimize_bound_args": {"iteration": 3, "lr_alpha": 0.1}})

    def bound_fn(box):
        xb = BoundedTensor(box.center, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
        return bm.compute_bounds(x=(xb,), method=method)

    return check_bounds_sound(model, x, eps, bound_fn, n_samples=12, pgd_steps=4, **kw)


@pytest.mark.parametrize("method", METHODS)
def test_functional_graph_sound(method):
    torch.manual_seed(0)
    model = Functional().to(DT)
    x = torch.randn(2, 2, 6, 6, dtype=DT)
    _sound(model, x, 0.05, method)


@pytest.mark.parametrize("method", METHODS)
def test_branches_cat_sum_reciprocal_sound(method):
    torch.manual_seed(1)
    model = Branches().to(DT)
    x = torch.randn(3, 4, dtype=DT)
    _sound(model, x, 0.1, method)


@pytest.mark.parametrize("name", ["cnn-bn-avgpool", "resnet", "mlp-bn"])
def test_ibp_equals_certcore_with_pool_and_train_mode_bn(name):
    model, shape = make_zoo_model(name, dtype=DT)
    x = torch.rand(4, *shape, dtype=DT)
    box = Interval.from_eps(x, 0.02)
    xb = BoundedTensor(x, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
    bm = BoundedModule(model, x)
    lb, ub = bm.compute_bounds(x=(xb,), method="IBP")
    ref = ibp(model, box)
    assert torch.equal(lb, ref.lower) and torch.equal(ub, ref.upper)
    if name != "resnet":  # certcore's Residual sums two branches the same way; one check is enough
        model.train()
        lb, ub = bm.compute_bounds(x=(xb,), method="IBP")
        ref = ibp(model, box, clean=x)
        torch.testing.assert_close(lb, ref.lower, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ub, ref.upper, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["CROWN", "forward"])
def test_train_mode_batchnorm_sound_against_frozen_statistics(method):
    model, shape = make_zoo_model("cnn-bn-avgpool", dtype=DT)
    model.train()
    x = torch.rand(4, *shape, dtype=DT)
    bm = BoundedModule(model, x)

    def bound_fn(box):
        xb = BoundedTensor(x, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
        return bm.compute_bounds(x=(xb,), method=method)

    check_bounds_sound(
        freeze_batch_stats(model, x), x, 0.02, bound_fn, n_samples=8, pgd_steps=3, pgd_coords=4
    )


def test_unsupported_structural_uses():
    x = torch.randn(2, 3)

    class BatchSlice(nn.Module):
        def forward(self, x):
            return x[1:]

    class Reduce(nn.Module):
        def forward(self, x):
            return x.sum()

    class Recip(nn.Module):
        def forward(self, x):
            return 2.0 / x

    class MaxPool(nn.Module):
        def forward(self, x):
            return F.max_pool3d(x.reshape(x.shape[0], 1, 1, 1, -1), (1, 1, 2))

    for model, match in (
        (BatchSlice(), "batch"),
        (Reduce(), "sum"),
        (Recip(), "only 1 / x"),
        (MaxPool(), "max_pool3d"),
    ):
        with pytest.raises(UnsupportedOperationError, match=match):
            bm = BoundedModule(model, x)
            bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.1)),), method="IBP")


def test_reciprocal_straddling_zero():
    class Recip(nn.Module):
        def forward(self, x):
            return torch.reciprocal(x)

    x = torch.tensor([[0.05, 2.0]], dtype=DT)
    bm = BoundedModule(Recip(), x)
    xb = BoundedTensor(x, PerturbationLpNorm(0.1))
    lb, ub = bm.compute_bounds(x=(xb,), method="IBP")
    assert lb[0, 0] == -torch.inf and ub[0, 0] == torch.inf and torch.isfinite(lb[0, 1])
    with pytest.raises(ValueError, match="contains 0"):
        bm.compute_bounds(x=(xb,), method="CROWN")


class DerivedWeightBatchNorm(nn.Module):
    """A weight computed from a parameter (2·w) and a BatchNorm in train mode after it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 3, dtype=DT))
        self.b = nn.Parameter(torch.randn(5, dtype=DT))
        self.bn = nn.BatchNorm1d(5).to(DT)
        self.out = nn.Linear(5, 2).to(DT)

    def forward(self, x):
        return self.out(F.relu(self.bn(F.linear(x, self.w * 2, self.b))))


def _manual_ibp_lower(model: DerivedWeightBatchNorm, x: Tensor, eps: float) -> Tensor:
    """IBP of that model written out: the clean batch's statistics, differentiable like the model's."""
    w = model.w * 2
    c, r = F.linear(x, w, model.b), F.linear(torch.full_like(x, eps), w.abs())
    clean = F.linear(x, w, model.b)
    mean, var = clean.mean(0), clean.var(0, unbiased=False)
    scale = model.bn.weight / torch.sqrt(var + model.bn.eps)
    c, r = (c - mean) * scale + model.bn.bias, r * scale.abs()
    lo, hi = F.relu(c - r), F.relu(c + r)
    c, r = (lo + hi) / 2, (hi - lo) / 2
    return F.linear(c, model.out.weight, model.out.bias) - F.linear(r, model.out.weight.abs())


def test_gradients_reach_derived_weights_and_train_mode_batch_statistics():
    """The clean forward pass runs without autograd history except where a bound reads its values:
    a parameter-derived weight and the input of a train-mode BatchNorm must keep theirs."""
    torch.manual_seed(0)
    model = DerivedWeightBatchNorm().train()
    x = torch.randn(6, 3, dtype=DT)
    bm = BoundedModule(model, x)
    lb, _ = bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.1)),), method="IBP")
    got = torch.autograd.grad(lb.sum(), [model.w, model.b, model.bn.weight, model.out.weight])
    ref_lb = _manual_ibp_lower(model, x, 0.1)
    torch.testing.assert_close(lb, ref_lb, rtol=1e-12, atol=1e-12)
    want = torch.autograd.grad(ref_lb.sum(), [model.w, model.b, model.bn.weight, model.out.weight])
    for g, ref in zip(got, want, strict=True):
        torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["IBP", "CROWN", "CROWN-IBP"])
def test_bound_computation_leaves_batchnorm_running_statistics_alone(method):
    torch.manual_seed(1)
    model = DerivedWeightBatchNorm().train()
    x = torch.randn(6, 3, dtype=DT)
    before = [t.clone() for t in (model.bn.running_mean, model.bn.running_var, model.bn.num_batches_tracked)]
    bm = BoundedModule(model, x)
    bm.compute_bounds(x=(BoundedTensor(x, PerturbationLpNorm(0.1)),), method=method)
    after = (model.bn.running_mean, model.bn.running_var, model.bn.num_batches_tracked)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    model(x)  # the training step's own forward pass does update them
    assert not torch.equal(before[0], model.bn.running_mean) and int(model.bn.num_batches_tracked) == 1


def test_clean_pass_reuse_gives_the_bounds_of_a_fresh_module():
    """After the first call, a call with the same input signature reuses the clean pass's perturbed
    values (only their shapes are read): bounds equal those of a fresh BoundedModule, also after the
    batch size, the dtype or the mode of a BatchNorm changes."""
    torch.manual_seed(2)
    model, shape = make_zoo_model("cnn-bn-avgpool", dtype=torch.float32)
    model.eval()
    bm = BoundedModule(model, torch.rand(3, *shape))

    def check(x, method):
        ptb = PerturbationLpNorm(0.05)
        got = bm.compute_bounds(x=(BoundedTensor(x, ptb),), method=method)
        want = BoundedModule(model, x).compute_bounds(x=(BoundedTensor(x, ptb),), method=method)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)

    for x in (torch.rand(3, *shape), torch.rand(3, *shape), torch.rand(5, *shape)):
        for method in ("IBP", "CROWN", "CROWN-IBP", "forward"):
            check(x, method)
    model.double()
    check(torch.rand(5, *shape, dtype=torch.float64), "CROWN")
    model.train()  # train-mode BatchNorm reads the clean values: never reused
    check(torch.rand(5, *shape, dtype=torch.float64), "IBP")
