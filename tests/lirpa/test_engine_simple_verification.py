"""auto_LiRPA's examples/vision/simple_verification.py, offline, on an MNIST-shaped input (the
convex_adversarial MNIST CNN) and a CIFAR-shaped one (a small CNN), random weights (seed 0): bounds by IBP,
CROWN-IBP, CROWN (forward too on CIFAR) and α-CROWN, on the logits and on margins; every bound is sound
(sampled and PGD points stay inside), and α-CROWN is never looser than CROWN (its starting point)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from certcore.bounds import margin_spec
from certcore.testing import check_bounds_sound
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm

DT = torch.float64


def simple_cnn(channels: int, width: int, hidden: int, side: int) -> nn.Sequential:
    """Conv(4, s2, p1) → ReLU → Conv(4, s2, p1) → ReLU → FC hidden → ReLU → FC 10."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width if side == 28 else width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear((2 * width if side == 28 else width) * (side // 4) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def _check_mnist(widths, margins):
    # CROWN is not provably tighter than IBP in general; on this net it is far tighter, as in the paper
    assert widths["CROWN"] < widths["IBP"]
    crown, alpha = margins["CROWN"], margins["alpha-CROWN"]
    assert bool((alpha[0] >= crown[0] - 1e-12).all() and (alpha[1] <= crown[1] + 1e-12).all())


def _check_cifar(widths, margins):
    assert widths["IBP"] >= widths["CROWN-IBP"] >= widths["CROWN"] * (1 - 1e-9)
    assert bool((margins["alpha-CROWN"][0] >= margins["CROWN"][0] - 1e-9).all())
    assert bool((margins["CROWN"][0] >= margins["IBP"][0] - 1e-9).all())


CASES = {
    # the convex_adversarial MNIST net: Conv(1,16)-Conv(16,32)-FC(1568,100)-FC(100,10)
    "mnist": (lambda: simple_cnn(1, 16, 100, 28), (1, 28, 28), 0.005, {"conv_mode": "matrix"},
              ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN"), _check_mnist),
    "cifar": (lambda: simple_cnn(3, 4, 16, 32), (3, 32, 32), 2 / 255, None,
              ("IBP", "CROWN-IBP", "CROWN", "forward", "alpha-CROWN"), _check_cifar),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_simple_verification_all_methods_sound(case):
    build, shape, eps, opts, methods, check = CASES[case]
    torch.manual_seed(0)
    model = build().to(DT).eval()
    x = torch.rand(2, *shape, dtype=DT)
    bm = BoundedModule(model, torch.zeros(1, *shape, dtype=DT), bound_opts=opts)
    bm.set_bound_opts({"optimize_bound_args": {"iteration": 5, "lr_alpha": 0.1}})
    y = model(x).argmax(1)
    C = margin_spec(y, 10, dtype=DT)[:, :3]  # f_y - f_j for the first three j != y
    widths, margins = {}, {}

    def margin(z):
        return torch.einsum("bsk,bk->bs", C.repeat(z.shape[0] // C.shape[0], 1, 1), z)

    for method in methods:

        def bound_fn(box, method=method, C=None):
            ptb = PerturbationLpNorm(norm=float("inf"), x_L=box.lower, x_U=box.upper)
            out = bm.compute_bounds(x=(BoundedTensor(box.center, ptb),), C=C, method=method)
            if C is not None:
                margins[method] = out
            return out

        if method != "alpha-CROWN":  # α-CROWN on the margins only (it is the slow one)
            report = check_bounds_sound(model, x, eps, bound_fn, n_samples=4, pgd_steps=3, pgd_coords=3)
            widths[method] = report.mean_width
        check_bounds_sound(
            lambda z: margin(model(z)), x, eps, lambda box, f=bound_fn: f(box, C=C),
            n_samples=4, pgd_steps=3, pgd_coords=3,
        )
    check(widths, margins)
