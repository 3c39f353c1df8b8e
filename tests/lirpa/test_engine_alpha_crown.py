"""α-CROWN: the hand-checkable toy of auto_LiRPA (examples/simple/toy.py), never looser than CROWN at
initialisation, sound, runs under torch.no_grad() and leaves the model's gradients alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certcore.testing import check_bounds_sound
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm

DT = torch.float64


class Toy(nn.Module):
    """z = relu(x W1ᵀ) W2ᵀ with W1 = [[1, -1], [2, -1]], W2 = [[1, -1]] on x ∈ [-1, 2] × [-2, 1]."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w1", torch.tensor([[1.0, -1.0], [2.0, -1.0]]))
        self.register_buffer("w2", torch.tensor([[1.0, -1.0]]))

    def forward(self, x):
        return F.linear(F.relu(F.linear(x, self.w1)), self.w2)


def test_toy_example_values():
    x_L, x_U = torch.tensor([[-1.0, -2.0]]), torch.tensor([[2.0, 1.0]])
    bm = BoundedModule(Toy(), x_L)
    x = BoundedTensor((x_L + x_U) / 2, PerturbationLpNorm(x_L=x_L, x_U=x_U))
    bm.set_bound_opts({"optimize_bound_args": {"iteration": 20, "lr_alpha": 0.1}})
    got = {m: bm.compute_bounds(x=(x,), method=m) for m in ("IBP", "CROWN", "alpha-CROWN")}
    assert [float(v) for v in got["IBP"]] == [-6.0, 4.0]
    assert [float(v) for v in got["CROWN"]] == pytest.approx([-3.0, 3.0])
    # α-CROWN tightens only the upper bound: relu(h1) <= (2/3)(h1 + 2), -relu(h2) <= -α h2, optimum α = 2/3
    assert float(got["alpha-CROWN"][0]) == pytest.approx(-3.0)
    assert float(got["alpha-CROWN"][1]) == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_never_looser_than_crown_and_sound(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 12), nn.LeakyReLU(0.1), nn.Linear(12, 4)
    ).to(DT)
    x = torch.randn(3, 5, dtype=DT)
    C = torch.randn(3, 2, 4, dtype=DT)
    bm = BoundedModule(model, x)
    bm.set_bound_opts({"optimize_bound_args": {"iteration": 10, "lr_alpha": 0.1}})
    xb = BoundedTensor(x, PerturbationLpNorm(0.3))
    crown = bm.compute_bounds(x=(xb,), C=C, method="CROWN")
    alpha = bm.compute_bounds(x=(xb,), C=C, method="CROWN-Optimized")
    assert bool((alpha[0] >= crown[0] - 1e-12).all() and (alpha[1] <= crown[1] + 1e-12).all())
    assert bool((alpha[0] > crown[0] + 1e-9).any())  # it does optimise something

    def bound_fn(box):
        xb = BoundedTensor(box.center, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
        return bm.compute_bounds(x=(xb,), method="alpha-CROWN")

    check_bounds_sound(model, x, 0.3, bound_fn, n_samples=16, pgd_steps=5)


def test_runs_under_no_grad_and_leaves_model_grads():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(DT)
    x = torch.randn(2, 4, dtype=DT)
    bm = BoundedModule(model, x)
    xb = BoundedTensor(x, PerturbationLpNorm(0.5))
    with torch.no_grad():
        lb, ub = bm.compute_bounds(x=(xb,), method="alpha-CROWN")
    crown_lb, crown_ub = bm.compute_bounds(x=(xb,), method="CROWN")
    assert bool((lb >= crown_lb - 1e-12).all() and (ub <= crown_ub + 1e-12).all())
    assert float((ub - lb).sum()) < float((crown_ub - crown_lb).detach().sum())
    assert all(p.grad is None for p in model.parameters())


def test_intermediate_crown_passes_record_no_autograd_graph(monkeypatch):
    """α-CROWN detaches the intermediate bounds, so their CROWN passes run under no_grad (recording
    them kept every pass's graph alive: CNN-7+BN at batch 1 ran out of 22 GB)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(2, 3)
    bm = BoundedModule(model, x)
    seen = []
    original = bm._crown_intermediates

    def spy(final):
        seen.append(torch.is_grad_enabled())
        return original(final)

    monkeypatch.setattr(bm, "_crown_intermediates", spy)
    xb = BoundedTensor(x, PerturbationLpNorm(0.5))
    bm.compute_bounds(x=(xb,), method="alpha-CROWN")
    bm.compute_bounds(x=(xb,), method="CROWN")  # plain CROWN stays differentiable
    assert seen == [False, True]
