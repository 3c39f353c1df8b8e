"""auto_LiRPA's examples/vision/simple_verification.py, offline: the convex_adversarial MNIST CNN with
random weights (seed 0) on random MNIST-shaped inputs, bounded by IBP, CROWN-IBP, CROWN and α-CROWN,
with and without a margin spec; every bound is sound (sampled and PGD points stay inside), and α-CROWN is
never looser than CROWN (its starting point)."""

from __future__ import annotations

import torch
from torch import nn

from certcore.bounds import margin_spec
from certcore.testing import check_bounds_sound
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm

DT = torch.float64


def mnist_a_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def test_simple_verification_all_methods_sound():
    torch.manual_seed(0)
    model = mnist_a_model().to(DT).eval()
    x = torch.rand(2, 1, 28, 28, dtype=DT)
    eps = 0.005
    bm = BoundedModule(model, torch.zeros(1, 1, 28, 28, dtype=DT), bound_opts={"conv_mode": "matrix"})
    y = model(x).argmax(1)
    C = margin_spec(y, 10, dtype=DT)[:, :3]  # f_y - f_j for the first three j != y
    widths, margins = {}, {}
    bm.set_bound_opts({"optimize_bound_args": {"iteration": 5, "lr_alpha": 0.1}})

    def margin(z):
        return torch.einsum("bsk,bk->bs", C.repeat(z.shape[0] // C.shape[0], 1, 1), z)

    for method in ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN"):

        def bound_fn(box, method=method, C=None):
            xb = BoundedTensor(
                box.center, PerturbationLpNorm(norm=float("inf"), x_L=box.lower, x_U=box.upper)
            )
            out = bm.compute_bounds(x=(xb,), C=C, method=method)
            if C is not None:
                margins[method] = out
            return out

        if method != "alpha-CROWN":  # α-CROWN on the margins only (it is the slow one)
            report = check_bounds_sound(model, x, eps, bound_fn, n_samples=4, pgd_steps=3, pgd_coords=3)
            widths[method] = report.mean_width
        check_bounds_sound(
            lambda z: margin(model(z)),
            x,
            eps,
            lambda box, m=method: bound_fn(box, m, C),
            n_samples=4,
            pgd_steps=3,
        )
    # CROWN is not provably tighter than IBP in general; on this net it is far tighter, as in the paper
    assert widths["CROWN"] < widths["IBP"]
    crown, alpha = margins["CROWN"], margins["alpha-CROWN"]
    assert bool((alpha[0] >= crown[0] - 1e-12).all() and (alpha[1] <= crown[1] + 1e-12).all())
