"""simple_verification on a CIFAR-shaped input (3×32×32): a small CNN with random weights, bounded by IBP,
CROWN-IBP, CROWN, forward and α-CROWN, on the logits and on margins; every bound is sound, and the
methods tighten in auto_LiRPA's order (IBP loosest, α-CROWN never looser than CROWN)."""

from __future__ import annotations

import torch
from torch import nn

from certcore.bounds import margin_spec
from certcore.testing import check_bounds_sound
from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm

DT = torch.float64


def cifar_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )


def test_cifar_shaped_simple_verification_all_methods_sound():
    torch.manual_seed(0)
    model = cifar_cnn().to(DT).eval()
    x = torch.rand(2, 3, 32, 32, dtype=DT)
    eps = 2 / 255
    bm = BoundedModule(model, torch.zeros(1, 3, 32, 32, dtype=DT))
    bm.set_bound_opts({"optimize_bound_args": {"iteration": 5, "lr_alpha": 0.1}})
    y = model(x).argmax(1)
    C = margin_spec(y, 10, dtype=DT)[:, :3]
    widths, margins = {}, {}

    def margin(z):
        return torch.einsum("bsk,bk->bs", C.repeat(z.shape[0] // C.shape[0], 1, 1), z)

    for method in ("IBP", "CROWN-IBP", "CROWN", "forward", "alpha-CROWN"):

        def bound_fn(box, method=method, C=None):
            ptb = PerturbationLpNorm(norm=float("inf"), x_L=box.lower, x_U=box.upper)
            xb = BoundedTensor(box.center, ptb)
            out = bm.compute_bounds(x=(xb,), C=C, method=method)
            if C is not None:
                margins[method] = out
            return out

        if method != "alpha-CROWN":
            report = check_bounds_sound(model, x, eps, bound_fn, n_samples=4, pgd_steps=3, pgd_coords=3)
            widths[method] = report.mean_width
        check_bounds_sound(
            lambda z: margin(model(z)), x, eps, lambda box, f=bound_fn: f(box, C=C), n_samples=4,
            pgd_steps=3, pgd_coords=3,
        )
    assert widths["IBP"] >= widths["CROWN-IBP"] >= widths["CROWN"] * (1 - 1e-9)
    assert bool((margins["alpha-CROWN"][0] >= margins["CROWN"][0] - 1e-9).all())
    assert bool((margins["CROWN"][0] >= margins["IBP"][0] - 1e-9).all())
