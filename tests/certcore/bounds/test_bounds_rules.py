"""Single-layer IBP rules: semantics, differentiability and bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from certcore.bounds import (
    Interval,
    batchnorm_affine,
    interval_add,
    interval_batchnorm,
    interval_conv2d,
    interval_leaky_relu,
    interval_linear,
    interval_maxpool,
    interval_monotone,
)
from certcore.testing import check_bounds_sound

DT = torch.float64


def rand_box(*shape, eps=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=DT)
    return x, Interval.from_eps(x, eps)


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_affine_is_the_eval_mode_layer(affine):
    """scale·x + shift equals nn.BatchNorm2d in eval mode, with and without γ, β."""
    bn = nn.BatchNorm2d(3, affine=affine).to(DT)
    gen = torch.Generator().manual_seed(1)
    bn.running_mean.copy_(torch.randn(3, generator=gen, dtype=DT))
    bn.running_var.copy_(torch.rand(3, generator=gen, dtype=DT) + 0.5)
    if affine:
        with torch.no_grad():
            bn.weight.copy_(torch.randn(3, generator=gen, dtype=DT))
            bn.bias.copy_(torch.randn(3, generator=gen, dtype=DT))
    x = torch.randn(2, 3, 4, 4, generator=gen, dtype=DT)
    scale, shift = batchnorm_affine(bn, bn.running_mean, bn.running_var)
    expected = bn.eval()(x)
    torch.testing.assert_close(x * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1), expected)


def test_batchnorm_train_uses_clean_batch_statistics_not_the_bounds():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).to(DT).train()
    with torch.no_grad():
        bn.weight.uniform_(-1.5, 1.5)
        bn.bias.uniform_(-1, 1)
    clean = torch.randn(8, 3, 4, 4, dtype=DT) * 2 + 1
    box = Interval.from_eps(clean, 0.3)
    running = (bn.running_mean.clone(), bn.running_var.clone())
    out = interval_batchnorm(box, bn, clean_input=clean)
    # the rule does not touch the running statistics
    assert torch.equal(bn.running_mean, running[0]) and torch.equal(bn.running_var, running[1])
    # the centre maps like the clean forward: normalising the clean batch by its own statistics
    expected_center = bn(clean)
    torch.testing.assert_close(out.center, expected_center, rtol=1e-12, atol=1e-12)
    scale = (bn.weight / torch.sqrt(clean.var((0, 2, 3), unbiased=False) + bn.eps)).abs().view(1, 3, 1, 1)
    torch.testing.assert_close(out.radius, 0.3 * scale.expand_as(out.radius), rtol=1e-12, atol=1e-12)
    # statistics of the bounds (e.g. of the lower ends) would give something else
    wrong = interval_batchnorm(box, bn, clean_input=box.lower)
    assert not torch.allclose(wrong.center, out.center)


def test_batchnorm_eval_uses_running_statistics_and_ignores_clean():
    torch.manual_seed(1)
    bn = nn.BatchNorm1d(4).to(DT)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    bn.eval()
    x, box = rand_box(5, 4)
    a = interval_batchnorm(box, bn)
    b = interval_batchnorm(box, bn, clean_input=torch.randn(5, 4, dtype=DT))
    assert torch.equal(a.lower, b.lower)
    torch.testing.assert_close(a.center, bn(x))


def test_batchnorm_train_without_clean_raises():
    bn = nn.BatchNorm1d(4).to(DT).train()
    with pytest.raises(ValueError, match="clean batch's statistics"):
        interval_batchnorm(rand_box(5, 4)[1], bn)
    bn_nostats = nn.BatchNorm1d(4, track_running_stats=False).to(DT).eval()
    with pytest.raises(ValueError, match="clean"):
        interval_batchnorm(rand_box(5, 4)[1], bn_nostats)


def test_batchnorm_without_affine_and_1d_sequence_input():
    bn = nn.BatchNorm1d(3, affine=False).to(DT).train()
    clean = torch.randn(4, 3, 7, dtype=DT)
    out = interval_batchnorm(Interval.point(clean), bn, clean_input=clean)
    torch.testing.assert_close(out.lower, bn(clean))


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_conv_padding_modes_are_sound(padding_mode):
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=2, padding_mode=padding_mode).to(DT)
    x = torch.rand(2, 2, 5, 5, dtype=DT)
    check_bounds_sound(conv, x, 0.1, lambda box: interval_conv2d(box, conv), n_samples=32, pgd_steps=5)


@pytest.mark.parametrize(
    "conv",
    [nn.Conv1d(2, 4, 3, stride=2, padding=1, groups=2), nn.Conv3d(2, 2, 2, padding=1, dilation=2)],
    ids=["conv1d", "conv3d"],
)
def test_conv1d_conv3d_sound(conv):
    conv = conv.to(DT)
    shape = (2, 2, 7) if isinstance(conv, nn.Conv1d) else (2, 2, 4, 4, 4)
    x = torch.rand(*shape, dtype=DT)
    check_bounds_sound(conv, x, 0.1, lambda box: interval_conv2d(box, conv), n_samples=16, pgd_steps=5)


def test_leaky_relu_negative_slope_is_exact():
    lo = torch.tensor([-2.0, -2.0, 0.5, -1.0], dtype=DT)
    hi = torch.tensor([-1.0, 1.0, 1.0, 3.0], dtype=DT)
    out = interval_leaky_relu(Interval(lo, hi), negative_slope=-0.5)
    # f(x) = x for x >= 0, -0.5 x for x < 0: range over each interval
    assert torch.equal(out.lower, torch.tensor([0.5, 0.0, 0.5, 0.0], dtype=DT))
    assert torch.equal(out.upper, torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=DT))
    pos = interval_leaky_relu(Interval(lo, hi), negative_slope=0.1)
    assert torch.equal(pos.lower, torch.tensor([-0.2, -0.2, 0.5, -0.1], dtype=DT))


def test_monotone_and_add_and_maxpool():
    box = Interval(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]))
    out = interval_monotone(box, torch.sigmoid)
    assert torch.equal(out.lower, torch.sigmoid(box.lower))
    s = interval_add(box, Interval.point(torch.tensor([1.0, 1.0])))
    assert torch.equal(s.lower, torch.tensor([0.0, 1.0])) and torch.equal(s.upper, torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="cannot add intervals of shapes"):
        interval_add(box, Interval.point(torch.zeros(3)))
    with pytest.raises(ValueError, match="return_indices"):
        interval_maxpool(Interval.point(torch.zeros(1, 1, 2, 2)), nn.MaxPool2d(2, return_indices=True))


def test_rules_are_differentiable_gradcheck():
    torch.manual_seed(3)
    lin = nn.Linear(4, 3).to(DT)
    conv = nn.Conv2d(2, 2, 3, stride=2, padding=1, groups=2).to(DT)
    bn = nn.BatchNorm2d(2).to(DT).train()
    lo = torch.randn(2, 4, dtype=DT, requires_grad=True)
    r = torch.rand(2, 4, dtype=DT, requires_grad=True)

    def f_lin(lo, r, w, b):
        out = interval_linear(Interval(lo, lo + r, check=False), w, b)
        return out.lower, out.upper

    torch.autograd.gradcheck(f_lin, (lo, r, lin.weight, lin.bias))
    clo = torch.randn(2, 2, 4, 4, dtype=DT, requires_grad=True)
    cr = torch.rand(2, 2, 4, 4, dtype=DT, requires_grad=True)

    def f_conv_bn(lo, r, w, gamma):
        # w and gamma are conv.weight and bn.weight themselves (gradcheck perturbs them in place)
        box = interval_conv2d(Interval(lo, lo + r, check=False), conv)
        out = interval_batchnorm(box, bn, clean_input=conv(lo + r / 2))
        return out.lower, out.upper

    torch.autograd.gradcheck(f_conv_bn, (clo, cr, conv.weight, bn.weight))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda b: interval_linear(b, torch.zeros(3, 5, dtype=DT)), ValueError, "in_features=5"),
        (lambda b: interval_linear(b, torch.zeros(3, 4)), TypeError, "dtype torch.float32 but the interval"),
        (lambda b: interval_linear(b, torch.zeros(4, dtype=DT)), ValueError, "weight must be 2-D"),
        (lambda b: interval_conv2d(b, nn.Conv2d(4, 2, 1).to(DT)), ValueError, "expected 4-D input"),
        (lambda b: interval_conv2d(b, nn.Linear(4, 2)), TypeError, "needs an nn.Conv"),
        (lambda b: interval_batchnorm(b, nn.BatchNorm1d(3).to(DT).eval()), ValueError, "BatchNorm1d\\(3\\)"),
        (lambda b: interval_batchnorm(b, nn.LayerNorm(4)), TypeError, "needs an nn.BatchNorm"),
    ],
)
def test_rule_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(rand_box(2, 4)[1])
