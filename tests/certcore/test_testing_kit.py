"""certcore.testing: the soundness kit passes sound bounds and catches unsound ones."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from certcore.bounds import Interval, certified, ibp, ibp_margin_lower
from certcore.testing import (
    SoundnessReport,
    check_bounds_sound,
    check_certified_robust,
    default_tolerance,
    freeze_batch_stats,
    make_zoo_model,
)

DT = torch.float64


def shrink(bound_fn, fraction):
    """A deliberately unsound bound: pull both ends towards the centre by ``fraction`` of the width."""

    def shrunk(box):
        out = bound_fn(box)
        c, r = out.center, out.radius * (1 - fraction)
        return Interval(c - r, c + r)

    return shrunk


def test_kit_passes_sound_bounds_and_reports():
    model, shape = make_zoo_model("cnn-stride-pad", seed=0)
    x = torch.rand(3, *shape, dtype=DT)
    report = check_bounds_sound(
        model, x, 0.05, lambda box: ibp(model, box), n_samples=16, pgd_steps=5, data_min=0.0, data_max=1.0
    )
    assert isinstance(report, SoundnessReport) and report.ok and report.worst is None
    # centre + uniform + corners + PGD (max and min of each of the 3 outputs) per sample
    assert report.n_points == 3 * (1 + 16 + 16 + 2 * 3)
    assert report.max_excess < 0 and 0 <= report.looseness <= 1
    assert report.bounds.shape == (3, 3) and report.empirical.shape == (3, 3)
    assert "sound:" in str(report)


TIGHT = {  # models whose IBP bounds are the exact range of every output: any shrinking is unsound
    "linear": (lambda: nn.Linear(6, 3), (6,)),
    "conv": (lambda: nn.Conv2d(4, 2, 3, stride=2, padding=1, groups=2, dilation=2), (4, 5, 5)),
    "linear-relu": (lambda: nn.Sequential(nn.Linear(6, 3), nn.ReLU()), (6,)),
    "conv-bn-tanh": (
        lambda: nn.Sequential(nn.Conv2d(2, 2, 2), nn.BatchNorm2d(2).eval(), nn.Tanh()),
        (2, 3, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(TIGHT))
def test_kit_catches_slightly_shrunk_tight_bounds(name):
    build, shape = TIGHT[name]
    torch.manual_seed(1)
    model = build().to(DT)
    x = torch.rand(3, *shape, dtype=DT)
    check_bounds_sound(model, x, 0.05, lambda box: ibp(model, box), n_samples=16, pgd_steps=10)
    with pytest.raises(
        AssertionError, match=r"bounds are unsound: UNSOUND .* worst: f\(x'\)\[\d\]\[.*\] = .* found by"
    ):
        check_bounds_sound(
            model, x, 0.05, shrink(lambda box: ibp(model, box), 0.05), n_samples=16, pgd_steps=10
        )


@pytest.mark.parametrize("name", ["mlp-tanh", "cnn-maxpool", "resnet"])
def test_kit_catches_collapsed_bounds_on_deep_nets(name):
    """IBP on deep random nets is loose (the outputs reach a few % of the width), so mild shrinking
    stays sound; collapsing the bounds to 0.1 % of their width does not."""
    model, shape = make_zoo_model(name, seed=1)
    x = torch.rand(3, *shape, dtype=DT)
    with pytest.raises(AssertionError, match="bounds are unsound"):
        check_bounds_sound(
            model, x, 0.05, shrink(lambda box: ibp(model, box), 0.999), n_samples=16, pgd_steps=10
        )


def test_pgd_catches_what_sampling_misses():
    """f(x) = sum(x) over 64 inputs; the claimed upper bound is 30% of the width too low. Uniform and
    random-corner samples concentrate near the centre (many standard deviations away), PGD goes to the
    all-upper corner."""

    def f(x):
        return x.sum(dim=1, keepdim=True)

    def bound(box):
        lo, hi = f(box.lower), f(box.upper)
        return lo, hi - 0.3 * (hi - lo)

    x = torch.rand(4, 64, dtype=DT)
    sampled_only = check_bounds_sound(f, x, 0.1, bound, n_samples=64, pgd_steps=0, raise_on_failure=False)
    assert sampled_only.ok
    report = check_bounds_sound(f, x, 0.1, bound, n_samples=64, pgd_steps=10, raise_on_failure=False)
    assert not report.ok and report.n_violations == 4
    w = report.worst
    assert w.source == "pgd-max" and w.side == "upper" and w.output_index == (0,)
    assert w.value == pytest.approx(float(f(x[w.sample : w.sample + 1]) + 6.4))
    assert torch.allclose(w.point, x[w.sample] + 0.1)
    with pytest.raises(AssertionError, match="found by pgd-max"):
        check_bounds_sound(f, x, 0.1, bound, n_samples=8, pgd_steps=10)


def test_kit_catches_lower_bound_violations_and_accepts_tuples():
    lin = nn.Linear(5, 2).to(DT)
    x = torch.rand(3, 5, dtype=DT)

    def exact(box):
        out = ibp(lin, box)
        return out.lower, out.upper

    check_bounds_sound(lin, x, 0.1, exact, n_samples=8, pgd_steps=5)
    report = check_bounds_sound(
        lin,
        x,
        0.1,
        lambda b: (exact(b)[0] + 0.01, exact(b)[1]),
        n_samples=8,
        pgd_steps=5,
        raise_on_failure=False,
    )
    assert not report.ok and report.worst.side == "lower"
    assert report.worst.excess == pytest.approx(0.01 - report.worst.tol, abs=1e-9)


def test_tolerance_allows_rounding_only():
    lin = nn.Linear(5, 2).to(DT)
    x = torch.rand(3, 5, dtype=DT)
    atol, rtol = default_tolerance(DT)
    tiny = shrink(lambda b: ibp(lin, b), 1e-13)  # far below the tolerance: accepted
    check_bounds_sound(lin, x, 0.1, tiny, n_samples=8, pgd_steps=5)
    with pytest.raises(AssertionError):
        check_bounds_sound(
            lin, x, 0.1, shrink(lambda b: ibp(lin, b), 1e-4), n_samples=8, pgd_steps=5, atol=0, rtol=0
        )
    assert atol > 0 and rtol > 0 and default_tolerance(torch.float32)[0] > atol


def test_kit_l2_with_a_lipschitz_certifier():
    w = torch.tensor([[3.0, -4.0]], dtype=DT)
    lin = nn.Linear(2, 1, bias=False).to(DT)
    with torch.no_grad():
        lin.weight.copy_(w)
    x = torch.rand(5, 2, dtype=DT)
    eps = 0.1

    def lipschitz_bound(box):  # ignores the box (the ℓ2 ball's enclosure) and closes over x
        c = lin(x)
        return c - eps * 5.0, c + eps * 5.0

    report = check_bounds_sound(lin, x, eps, lipschitz_bound, norm="2", n_samples=32, pgd_steps=20)
    assert report.max_excess > -1e-6  # PGD reaches the exact bound

    def too_tight(box):
        lo, hi = lipschitz_bound(box)
        return lo + 0.01, hi - 0.01

    with pytest.raises(AssertionError, match="pgd"):
        check_bounds_sound(lin, x, eps, too_tight, norm="2", n_samples=32, pgd_steps=20)


def test_kit_flags_nan_outputs():
    def f(x):
        return torch.where(x > 0.5, torch.full_like(x, float("nan")), x)

    x = torch.full((2, 3), 0.45, dtype=DT)
    with pytest.raises(AssertionError, match="= nan"):
        check_bounds_sound(f, x, 0.1, lambda b: (b.lower - 1, b.upper + 1), n_samples=16, pgd_steps=0)


@pytest.mark.parametrize(
    ("bound_fn", "error", "match"),
    [
        (lambda b: b.lower, TypeError, "must return an Interval or a \\(lower, upper\\) pair"),
        (lambda b: (b.lower, b.upper[:, :1]), ValueError, "different shapes"),
        (
            lambda b: (b.lower[:, :1], b.upper[:, :1]),
            ValueError,
            "bound_fn returned bounds of shape \\(2, 1\\)",
        ),
        (lambda b: (b.lower * float("nan"), b.upper), AssertionError, "NaN bounds"),
    ],
)
def test_kit_bad_bound_functions(bound_fn, error, match):
    x = torch.rand(2, 3, dtype=DT)
    with pytest.raises(error, match=match):
        check_bounds_sound(lambda t: t, x, 0.1, bound_fn, n_samples=2, pgd_steps=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": -1.0}, ValueError, "eps must be >= 0"),
        ({"n_samples": -1}, ValueError, "n_samples must be an int >= 0"),
        ({"atol": -1.0}, ValueError, "atol and rtol must be >= 0"),
        ({"norm": "1"}, ValueError, "norm must be"),
        ({"x": torch.tensor([[float("nan"), 0.0, 0.0]])}, ValueError, "x must be finite"),
    ],
)
def test_kit_bad_arguments(kwargs, error, match):
    args = {"x": torch.rand(2, 3, dtype=DT), "eps": 0.1}
    args.update(kwargs)
    x, eps = args.pop("x"), args.pop("eps")
    with pytest.raises(error, match=match):
        check_bounds_sound(lambda t: t, x, eps, lambda b: b, pgd_steps=0, **args)


def test_freeze_batch_stats_matches_train_forward_and_leaves_model_alone():
    model, shape = make_zoo_model("resnet", seed=2)
    model.train()
    before = copy.deepcopy(model.state_dict())
    x = torch.rand(4, *shape, dtype=DT)
    frozen = freeze_batch_stats(model, x)
    assert not frozen.training
    expected = copy.deepcopy(model)(x)
    torch.testing.assert_close(frozen(x), expected)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # per-sample evaluation of the frozen model agrees with the batch
    torch.testing.assert_close(frozen(x[:1]), expected[:1])


def test_check_certified_robust_passes_true_and_catches_false_certificates():
    # class 0 iff x0 > 0; IBP is exact for a linear model: certified iff |x0| > eps
    model = nn.Linear(2, 2).to(DT)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model.bias.zero_()
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(32, 2, dtype=DT, generator=gen) * 2 - 1
    y = model(x).argmax(1)
    eps = 0.3
    mask = certified(ibp_margin_lower(model, Interval.from_eps(x, eps), y))
    assert torch.equal(mask, x[:, 0].abs() > eps)
    report = check_certified_robust(model, x, y, eps, mask, pgd_steps=10, attack_all=True)
    assert report.ok and report.n_certified == int(mask.sum())
    assert report.pgd_accuracy == pytest.approx(float(mask.double().mean()))
    fake = torch.ones(32, dtype=torch.bool)
    with pytest.raises(AssertionError, match="certified but PGD found misclassified points"):
        check_certified_robust(model, x, y, eps, fake, pgd_steps=10)
    rep = check_certified_robust(model, x, y, eps, fake, pgd_steps=10, raise_on_failure=False)
    assert rep.broken == (~mask).nonzero().flatten().tolist()
    wrong = 1 - y  # every sample is misclassified at its clean point
    rep = check_certified_robust(model, x, wrong, 0.0, fake, pgd_steps=1, raise_on_failure=False)
    assert rep.clean_wrong == list(range(32))


def test_kit_leaves_the_model_untouched():
    model, shape = make_zoo_model("mlp-bn", seed=5)
    model.train()  # a misuse for fn (samples are coupled), but the kit must not change the model
    before = copy.deepcopy(model.state_dict())
    x = torch.rand(4, *shape, dtype=DT)
    y = torch.zeros(4, dtype=torch.long)
    check_bounds_sound(
        model,
        x,
        0.01,
        lambda b: (
            b.lower.sum(1, keepdim=True).expand(4, 3) - 1e6,
            b.upper.sum(1, keepdim=True).expand(4, 3) + 1e6,
        ),
        n_samples=4,
        pgd_steps=2,
    )
    check_certified_robust(model, x, y, 0.01, torch.zeros(4, dtype=torch.bool), pgd_steps=2, attack_all=True)
    assert model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_check_certified_robust_bad_arguments():
    model = nn.Linear(3, 2).to(DT)
    x = torch.rand(4, 3, dtype=DT)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"certified_mask must be a bool tensor of shape \(4,\)"):
        check_certified_robust(model, x, y, 0.1, torch.ones(4))
    with pytest.raises(ValueError, match=r"y must be an integer tensor of shape \(4,\)"):
        check_certified_robust(model, x, y[:2], 0.1, torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        check_certified_robust(model, x, y, -0.1, torch.ones(4, dtype=torch.bool))
