"""IBP equals a naive per-neuron reference exactly on tiny nets.

The reference loops over output neurons and sums ``min(w*l, w*u)`` / ``max(w*l, w*u)`` per weight (the
textbook interval rule), which is mathematically equal to the centre/radius form that ``ibp`` uses.
To make *bitwise* equality meaningful, weights, inputs and ε are dyadic rationals with few bits
(multiples of 1/8 and 1/16), so every sum is exact in float64 whatever the order of operations.
Non-dyadic random data are compared with a tight relative tolerance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from certcore.bounds import Interval, Residual, ibp, interval_batchnorm, interval_conv2d, interval_linear

DT = torch.float64


# --------------------------------------------------------------------------------------------------
# The naive reference
# --------------------------------------------------------------------------------------------------
def naive_linear(lo, hi, weight, bias):
    out_lo = torch.empty(lo.shape[0], weight.shape[0], dtype=DT)
    out_hi = torch.empty_like(out_lo)
    for b in range(lo.shape[0]):
        for j in range(weight.shape[0]):
            w = weight[j]
            a, c = w * lo[b], w * hi[b]
            bj = bias[j] if bias is not None else 0.0
            out_lo[b, j] = torch.minimum(a, c).sum() + bj
            out_hi[b, j] = torch.maximum(a, c).sum() + bj
    return out_lo, out_hi


def naive_conv2d(lo, hi, conv: nn.Conv2d):
    assert conv.padding_mode == "zeros"
    (sh, sw), (ph, pw), (dh, dw), (kh, kw) = conv.stride, conv.padding, conv.dilation, conv.kernel_size
    lo_p = F.pad(lo, (pw, pw, ph, ph))
    hi_p = F.pad(hi, (pw, pw, ph, ph))
    n, _, h, w = lo_p.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    co, cig = conv.out_channels, conv.in_channels // conv.groups
    cog = co // conv.groups
    out_lo = torch.empty(n, co, ho, wo, dtype=DT)
    out_hi = torch.empty_like(out_lo)
    for b in range(n):
        for o in range(co):
            g = o // cog
            wgt = conv.weight[o]  # (cig, kh, kw)
            for p in range(ho):
                for q in range(wo):
                    rows = slice(p * sh, p * sh + dh * (kh - 1) + 1, dh)
                    cols = slice(q * sw, q * sw + dw * (kw - 1) + 1, dw)
                    a = wgt * lo_p[b, g * cig : (g + 1) * cig, rows, cols]
                    c = wgt * hi_p[b, g * cig : (g + 1) * cig, rows, cols]
                    bias = conv.bias[o] if conv.bias is not None else 0.0
                    out_lo[b, o, p, q] = torch.minimum(a, c).sum() + bias
                    out_hi[b, o, p, q] = torch.maximum(a, c).sum() + bias
    return out_lo, out_hi


def naive_batchnorm(lo, hi, bn: nn.BatchNorm2d, clean):
    if bn.training:
        dims = [0, *range(2, clean.dim())]
        mean, var = clean.mean(dims), clean.var(dims, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    out_lo, out_hi = torch.empty_like(lo), torch.empty_like(hi)
    for ch in range(bn.num_features):
        s = bn.weight[ch] / torch.sqrt(var[ch] + bn.eps)
        t = bn.bias[ch] - mean[ch] * s
        a, c = s * lo[:, ch], s * hi[:, ch]
        out_lo[:, ch] = torch.minimum(a, c) + t
        out_hi[:, ch] = torch.maximum(a, c) + t
    return out_lo, out_hi


def naive_pool(lo, hi, pool):
    k, s = pool.kernel_size, pool.stride
    assert pool.padding == 0
    n, c, h, w = lo.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    reduce = (lambda t: t.sum() / (k * k)) if isinstance(pool, nn.AvgPool2d) else (lambda t: t.max())
    out_lo = torch.empty(n, c, ho, wo, dtype=DT)
    out_hi = torch.empty_like(out_lo)
    for p in range(ho):
        for q in range(wo):
            for b in range(n):
                for ch in range(c):
                    out_lo[b, ch, p, q] = reduce(lo[b, ch, p * s : p * s + k, q * s : q * s + k])
                    out_hi[b, ch, p, q] = reduce(hi[b, ch, p * s : p * s + k, q * s : q * s + k])
    return out_lo, out_hi


def naive_ibp(module, lo, hi, clean=None):
    """Returns (lower, upper, clean_out)."""
    if isinstance(module, nn.Sequential):
        for m in module:
            lo, hi, clean = naive_ibp(m, lo, hi, clean)
        return lo, hi, clean
    if isinstance(module, Residual):
        a_lo, a_hi, ca = naive_ibp(module.block, lo, hi, clean)
        b_lo, b_hi, cb = naive_ibp(module.shortcut, lo, hi, clean)
        return a_lo + b_lo, a_hi + b_hi, (ca + cb if clean is not None else None)
    clean_out = module(clean) if clean is not None else None
    if isinstance(module, nn.Linear):
        return (*naive_linear(lo, hi, module.weight, module.bias), clean_out)
    if isinstance(module, nn.Conv2d):
        return (*naive_conv2d(lo, hi, module), clean_out)
    if isinstance(module, nn.BatchNorm2d):
        return (*naive_batchnorm(lo, hi, module, clean), clean_out)
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        return (*naive_pool(lo, hi, module), clean_out)
    if isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)):
        return module(lo), module(hi), clean_out  # elementwise, nondecreasing
    if isinstance(module, nn.Flatten):
        return lo.flatten(1), hi.flatten(1), clean_out
    raise AssertionError(f"naive reference has no rule for {type(module).__name__}")


# --------------------------------------------------------------------------------------------------
# Dyadic tiny nets
# --------------------------------------------------------------------------------------------------
def dyadic_(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Round every parameter to a multiple of 1/8 in [-1, 1]; BN: eps 0, var in {1/4, 1, 4}."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-8, 9, p.shape, generator=gen).to(DT) / 8)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 0.0
                m.running_mean.copy_(torch.randint(-4, 5, m.running_mean.shape, generator=gen).to(DT) / 8)
                m.running_var.copy_(4.0 ** torch.randint(-1, 2, m.running_var.shape, generator=gen).to(DT))
    return model


def dyadic_box(shape, gen):
    x = torch.randint(0, 17, shape, generator=gen).to(DT) / 16
    return x, Interval.from_eps(x, 1 / 16, data_min=0.0, data_max=1.0)


# Tanh and Sigmoid come last: their outputs are not dyadic, so sums after them would round.
def tiny_mlp():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(5, 6),
        nn.ReLU(),
        nn.Linear(6, 4),
        nn.LeakyReLU(0.25),
        nn.Linear(4, 3),
        nn.Tanh(),
    )


def tiny_cnn():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 2, padding=2, dilation=2),
        nn.AvgPool2d(2),
        nn.LeakyReLU(0.5),
        nn.Conv2d(4, 2, 1, bias=False),
        nn.MaxPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(2, 3),
        nn.Sigmoid(),
    )


def tiny_resnet():
    block = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
    return nn.Sequential(
        Residual(block, nn.Conv2d(2, 3, 1)),
        nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 3),
    )


NETS = {"mlp": (tiny_mlp, (5,)), "cnn": (tiny_cnn, (2, 5, 5)), "resnet": (tiny_resnet, (2, 4, 4))}


@pytest.mark.parametrize("name", sorted(NETS))
def test_ibp_equals_naive_reference_exactly(name):
    build, shape = NETS[name]
    gen = torch.Generator().manual_seed(1)
    model = dyadic_(build().to(DT), gen).eval()
    _, box = dyadic_box((2, *shape), gen)
    out = ibp(model, box)
    lo, hi, _ = naive_ibp(model, box.lower, box.upper)
    assert torch.equal(out.lower, lo)
    assert torch.equal(out.upper, hi)
    assert (out.upper > out.lower).any()  # not a degenerate comparison


@pytest.mark.parametrize("name", sorted(NETS))
def test_ibp_matches_naive_reference_random_weights_train_bn(name):
    build, shape = NETS[name]
    torch.manual_seed(2)
    model = nn.Sequential(build(), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT).train()
    x = torch.rand(3, *shape, dtype=DT)
    box = Interval.from_eps(x, 0.05, 0.0, 1.0)
    out = ibp(model, box, clean=x)
    lo, hi, _ = naive_ibp(model, box.lower, box.upper, clean=x)
    torch.testing.assert_close(out.lower, lo, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.upper, hi, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        {"stride": 1, "padding": 0},
        {"stride": 2, "padding": 1},
        {"stride": (1, 2), "padding": (2, 0), "dilation": (2, 1)},
        {"stride": 1, "padding": 1, "groups": 2},
        {"stride": 3, "padding": 2, "dilation": 2, "groups": 4, "bias": False},
    ],
)
def test_conv_rule_equals_naive_exactly(kw):
    gen = torch.Generator().manual_seed(3)
    conv = dyadic_(nn.Conv2d(4, 4, 3, **kw).to(DT), gen)
    _, box = dyadic_box((2, 4, 7, 6), gen)
    out = interval_conv2d(box, conv)
    lo, hi = naive_conv2d(box.lower, box.upper, conv)
    assert torch.equal(out.lower, lo) and torch.equal(out.upper, hi)


def test_linear_rule_equals_naive_exactly():
    gen = torch.Generator().manual_seed(4)
    lin = dyadic_(nn.Linear(7, 5).to(DT), gen)
    _, box = dyadic_box((3, 7), gen)
    out = interval_linear(box, lin.weight, lin.bias)
    lo, hi = naive_linear(box.lower, box.upper, lin.weight, lin.bias)
    assert torch.equal(out.lower, lo) and torch.equal(out.upper, hi)


def test_batchnorm_eval_rule_equals_naive_exactly():
    gen = torch.Generator().manual_seed(5)
    bn = dyadic_(nn.BatchNorm2d(3).to(DT), gen).eval()
    with torch.no_grad():
        bn.weight[0] = -bn.weight[0].abs() - 0.125  # a negative scale swaps the ends
    _, box = dyadic_box((2, 3, 2, 2), gen)
    out = interval_batchnorm(box, bn)
    lo, hi = naive_batchnorm(box.lower, box.upper, bn, None)
    assert torch.equal(out.lower, lo) and torch.equal(out.upper, hi)
