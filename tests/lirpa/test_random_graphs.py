"""Randomised soundness: seeded random small graphs (convolutions, BatchNorm, activations, residual adds,
concatenation, slicing, reshapes, average / max pooling, input normalisation, constant scaling) under
ℓ∞, ℓ2 and ℓ1 balls, checked for every method in float64.

ℓ∞ and ℓ2 use :func:`certcore.testing.check_bounds_sound` (centre, uniform, corner and PGD points);
ℓ1 (which the kit does not sample) uses the ball's vertices ``x ± eps·e_i`` and uniform points of the
ball. The default run covers ``N_FAST`` graphs (each with one norm, cycling ℓ∞ → ℓ2 → ℓ1, and every
method); ``-m slow`` runs a larger sweep.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from certcore.testing import check_bounds_sound, default_tolerance, freeze_batch_stats, randomize_batchnorm
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm

DT = torch.float64
N_FAST = 20
N_SLOW = 100
NORMS = (math.inf, 2, 1)
METHODS = (
    ("IBP", {}),
    ("CROWN", {"activation_bound_option": "adaptive"}),
    ("CROWN", {"activation_bound_option": "same-slope"}),
    ("CROWN", {"activation_bound_option": "zero-lb"}),
    ("CROWN", {"activation_bound_option": "one-lb"}),
    ("CROWN", {"conv_mode": "matrix"}),
    ("CROWN-IBP", {}),
    ("forward", {}),
    ("forward+backward", {}),
    ("alpha-CROWN", {"optimize_bound_args": {"iteration": 3, "lr_alpha": 0.2}}),
)
ACTS = ("relu", "relu", "leaky", "sigmoid", "tanh", "none")


def _act(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU,
        "leaky": lambda: nn.LeakyReLU(0.15),
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "none": nn.Identity,
    }[name]()


class RandomGraph(nn.Module):
    """A random program of blocks on an image state ``(B, C, H, W)``, then a flatten and blocks on a
    vector state ``(B, n)``, then a Linear head. The structure is fixed at construction (plain Python
    control flow over a list of block kinds), so torch.fx traces it."""

    def __init__(self, seed: int):
        super().__init__()
        rng = random.Random(seed)
        self.in_shape = (rng.choice([1, 2, 3]), rng.choice([5, 6, 7]), rng.choice([5, 6]))
        c, h, w = self.in_shape
        self.blocks = nn.ModuleList()
        self.kinds: list[tuple] = []
        self.register_buffer("mean", torch.randn(1, c, 1, 1) * 0.2)
        self.register_buffer("std", torch.rand(1, c, 1, 1) + 0.5)
        self.normalize = rng.random() < 0.5
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(["conv", "conv", "residual", "cat", "slice", "avgpool", "maxpool", "scale"])
            if kind in ("avgpool", "maxpool") and min(h, w) < 3:
                kind = "conv"
            if kind == "slice" and c < 2:
                kind = "conv"
            if kind == "conv":
                co, k = rng.randint(1, 4), rng.choice([1, 2, 3])
                stride, pad = rng.choice([1, 1, 2]), rng.randint(0, k // 2 + 1)
                if (h + 2 * pad - k) // stride + 1 < 1 or (w + 2 * pad - k) // stride + 1 < 1:
                    stride, pad = 1, k // 2 + 1
                layers = [nn.Conv2d(c, co, k, stride=stride, padding=pad)]
                if rng.random() < 0.5:
                    layers.append(nn.BatchNorm2d(co))
                layers.append(_act(rng.choice(ACTS)))
                self.blocks.append(nn.Sequential(*layers))
                self.kinds.append(("seq",))
                h, w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
                c = co
            elif kind == "residual":
                inner = nn.Sequential(
                    nn.Conv2d(c, c, 3, padding=1),
                    _act(rng.choice(ACTS)),
                    nn.Conv2d(c, c, 1),
                    nn.BatchNorm2d(c),
                )
                self.blocks.append(nn.ModuleList([inner, _act(rng.choice(ACTS))]))
                self.kinds.append(("residual",))
            elif kind == "cat":
                c1, c2 = rng.randint(1, 3), rng.randint(1, 3)
                a = nn.Sequential(nn.Conv2d(c, c1, 3, padding=1), _act(rng.choice(ACTS)))
                b = nn.Conv2d(c, c2, 1)
                self.blocks.append(nn.ModuleList([a, b]))
                self.kinds.append(("cat", rng.random() < 0.3))  # with a constant channel
                c = c1 + c2 + (1 if self.kinds[-1][1] else 0)
            elif kind == "slice":
                lo = rng.randint(0, c - 1)
                hi = rng.randint(lo + 1, c)
                self.blocks.append(nn.Identity())
                self.kinds.append(("slice", lo, hi))
                c = hi - lo
            elif kind in ("avgpool", "maxpool"):
                k = rng.choice([2, 3])
                stride = rng.choice([1, 2, k])
                pad = rng.randint(0, k // 2)
                if kind == "maxpool" and rng.random() < 0.3:  # adaptive: windows of varying size
                    h, w = max(1, h - rng.randint(1, 3)), max(1, w - rng.randint(1, 3))
                    self.blocks.append(nn.AdaptiveMaxPool2d((h, w)))
                    self.kinds.append(("seq",))
                    continue
                pool = nn.AvgPool2d if kind == "avgpool" else nn.MaxPool2d
                self.blocks.append(pool(k, stride=stride, padding=pad))
                self.kinds.append(("seq",))
                h, w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
            else:  # scale
                self.blocks.append(nn.Identity())
                self.kinds.append(("scale", rng.uniform(-1.5, 1.5), rng.uniform(-0.5, 0.5)))
        self.flatten_kind = rng.choice(["flatten", "view", "reshape", "module"])
        self.flat = nn.Flatten()
        n = c * h * w
        self.vec = nn.ModuleList()
        self.vec_kinds: list[str] = []
        for _ in range(rng.randint(0, 2)):
            kind = rng.choice(["linear", "linear", "residual", "cat"])
            m = rng.randint(2, 8)
            if kind == "linear":
                layers = [nn.Linear(n, m)]
                if rng.random() < 0.4:
                    layers.append(nn.BatchNorm1d(m))
                layers.append(_act(rng.choice(ACTS)))
                self.vec.append(nn.Sequential(*layers))
                n = m
            elif kind == "residual":
                self.vec.append(nn.Sequential(nn.Linear(n, m), _act(rng.choice(ACTS)), nn.Linear(m, n)))
            else:
                self.vec.append(nn.ModuleList([nn.Linear(n, m), nn.Sequential(nn.Linear(n, 2), nn.Tanh())]))
                n = m + 2
            self.vec_kinds.append(kind)
        self.head = nn.Linear(n, 3)

    def forward(self, x):
        h = (x - self.mean) / self.std if self.normalize else x
        for block, kind in zip(self.blocks, self.kinds, strict=True):
            if kind[0] == "seq":
                h = block(h)
            elif kind[0] == "residual":
                inner, act = block
                h = act(h + inner(h))
            elif kind[0] == "cat":
                a, b = block
                parts = [a(h), b(h)]
                if kind[1]:
                    parts.insert(1, torch.ones_like(h[:, :1]) * 0.5)
                h = torch.cat(parts, dim=1)
            elif kind[0] == "slice":
                h = h[:, kind[1] : kind[2]]
            else:
                h = h * kind[1] + kind[2]
        if self.flatten_kind == "flatten":
            h = torch.flatten(h, 1)
        elif self.flatten_kind == "view":
            h = h.view(h.size(0), -1)
        elif self.flatten_kind == "reshape":
            h = h.reshape(h.shape[0], -1)
        else:
            h = self.flat(h)
        for block, kind in zip(self.vec, self.vec_kinds, strict=True):
            if kind == "linear":
                h = block(h)
            elif kind == "residual":
                h = h + block(h)
            else:
                a, b = block
                h = torch.cat([a(h), b(h)], dim=1)
        return self.head(h)


def make_graph(seed: int) -> tuple[RandomGraph, torch.Tensor]:
    """The graph of ``seed`` and an input batch; every fifth graph has its BatchNorm in train mode (the
    engine then uses the clean batch's statistics as constants)."""
    torch.manual_seed(seed)
    model = RandomGraph(seed)
    randomize_batchnorm(model, torch.Generator().manual_seed(seed))
    model = model.to(DT).eval()
    if seed % 5 == 4:
        model.train()
    x = torch.randn(2, *model.in_shape, dtype=DT)
    return model, x


def _l1_points(x: torch.Tensor, eps: float, n_random: int, gen: torch.Generator) -> torch.Tensor:
    """``(k, B, *shape)`` points of the ℓ1 ball: every vertex ``x ± eps·e_i`` and uniform points."""
    batch, n = x.shape[0], x[0].numel()
    eye = torch.eye(n, dtype=x.dtype)
    vertices = torch.cat([eye, -eye]) * eps  # (2n, n)
    lap = -torch.log(torch.rand(n_random, batch, n, generator=gen, dtype=x.dtype))
    lap = lap * torch.where(torch.rand(n_random, batch, n, generator=gen) < 0.5, -1.0, 1.0).to(x.dtype)
    radius = torch.rand(n_random, batch, 1, generator=gen, dtype=x.dtype) ** (1.0 / n)
    inner = lap / lap.abs().sum(-1, keepdim=True) * radius * eps
    flat = x.reshape(1, batch, n)
    pts = torch.cat([flat + vertices.unsqueeze(1), flat + inner])
    return pts.reshape(-1, batch, *x.shape[1:])


def check_l1_sound(model, x, eps, lb, ub, n_random=64, seed=0) -> None:
    gen = torch.Generator().manual_seed(seed)
    pts = _l1_points(x, eps, n_random, gen)
    with torch.no_grad():
        out = model(pts.reshape(-1, *x.shape[1:])).reshape(pts.shape[0], *lb.shape)
    atol, rtol = default_tolerance(DT)
    tol = atol + rtol * torch.maximum(lb.abs(), ub.abs())
    over = (out - ub - tol).max().item()
    under = (lb - out - tol).max().item()
    assert over <= 0 and under <= 0, (
        f"ℓ1 bounds violated: above upper by {over:.3g}, below lower by {under:.3g}"
    )


def run_graph_checks(seed: int, norm: float) -> None:
    model, x = make_graph(seed)
    fn = freeze_batch_stats(model, x) if model.training else model  # samples treated independently
    eps = {math.inf: 0.05, 2: 0.2, 1: 0.3}[norm]
    for method, opts in METHODS:
        bm = BoundedModule(model, x, bound_opts=opts)
        label = f"seed {seed}, norm {norm}, {method} {opts}"
        if norm == math.inf:

            def bound_fn(box, bm=bm, method=method):
                xb = BoundedTensor(box.center, PerturbationLpNorm(x_L=box.lower, x_U=box.upper))
                return bm.compute_bounds(x=(xb,), method=method)

            report = check_bounds_sound(
                fn, x, eps, bound_fn, n_samples=8, pgd_steps=3, pgd_coords=3, raise_on_failure=False
            )
            assert report.ok, f"{label}: {report}"
            continue
        xb = BoundedTensor(x, PerturbationLpNorm(eps, norm=norm))
        lb, ub = bm.compute_bounds(x=(xb,), method=method)
        assert not bool(torch.isnan(lb).any() | torch.isnan(ub).any()), label
        if norm == 2:
            report = check_bounds_sound(
                fn,
                x,
                eps,
                lambda box, lb=lb, ub=ub: (lb, ub),
                norm="2",
                n_samples=8,
                pgd_steps=3,
                pgd_coords=3,
                raise_on_failure=False,
            )
            assert report.ok, f"{label}: {report}"
        else:
            try:
                check_l1_sound(fn, x, eps, lb.detach(), ub.detach(), seed=seed)
            except AssertionError as err:
                raise AssertionError(f"{label}: {err}") from None


@pytest.mark.parametrize("seed", range(N_FAST))
def test_random_graph_sound(seed):
    run_graph_checks(seed, NORMS[seed % 3])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(N_FAST, N_FAST + N_SLOW))
def test_random_graph_sound_sweep(seed):
    run_graph_checks(seed, NORMS[seed % 3])


def test_generator_covers_every_block_kind():
    kinds, acts, vec = set(), set(), set()
    pools = set()
    for seed in range(N_FAST):
        model, _ = make_graph(seed)
        kinds |= {k[0] for k in model.kinds}
        vec |= set(model.vec_kinds)
        acts |= {type(m).__name__ for m in model.modules()}
        pools |= {type(b).__name__ for b in model.blocks if "Pool" in type(b).__name__}
    assert {"seq", "residual", "cat", "slice", "scale"} <= kinds
    assert {"linear", "residual", "cat"} <= vec
    assert {"ReLU", "LeakyReLU", "Sigmoid", "Tanh", "BatchNorm2d", "BatchNorm1d"} <= acts
    assert {"AvgPool2d", "MaxPool2d"} <= pools
