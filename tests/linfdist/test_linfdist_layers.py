"""NormDist / NormDistConv / MeanShift: values vs a direct formula, identity init, bounds, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from certcore.bounds import Interval
from linfdist import MeanShift, NormDist, NormDistConv, at_p, get_p, set_p
from linfdist.layers import norm_dist_layers

P_VALUES = [1.0, 2.0, 8.0, 37.5, math.inf]


def reference_dist(x: torch.Tensor, w: torch.Tensor, p: float, groups: int) -> torch.Tensor:
    """y[b, o] = ||x[b, group(o)] - w[o]||_p, computed one output at a time (float64)."""
    b, ci = x.shape
    co, ci_g = w.shape
    co_g = co // groups
    out = torch.empty(b, co, dtype=torch.float64)
    for o in range(co):
        g = o // co_g
        t = x[:, g * ci_g : (g + 1) * ci_g].double() - w[o].double()
        out[:, o] = t.abs().amax(1) if math.isinf(p) else t.abs().pow(p).sum(1).pow(1 / p)
    return out


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("groups", [1, 2])
def test_norm_dist_matches_formula(p: float, groups: int) -> None:
    torch.manual_seed(0)
    layer = NormDist(12, 8, groups=groups, bias=False, mean_shift=False, p=p).double()
    x = torch.randn(5, 12, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (5, 8)
    torch.testing.assert_close(y, reference_dist(x, layer.weight.detach(), p, groups), rtol=1e-6, atol=1e-8)


def test_norm_dist_bias_and_mean_shift_eval() -> None:
    torch.manual_seed(1)
    layer = NormDist(6, 4, bias=True, mean_shift=True).double().eval()
    with torch.no_grad():
        layer.bias.copy_(torch.arange(4.0))
        layer.mean_shift.running_mean.copy_(torch.full((4,), 0.5))
    x = torch.randn(3, 6, dtype=torch.float64)
    expected = reference_dist(x, layer.weight.detach(), math.inf, 1) - 0.5 + torch.arange(4.0).double()
    torch.testing.assert_close(layer(x), expected)


def _conv_reference(x, layer: NormDistConv) -> torch.Tensor:
    """Slide the kernel by hand (padding by F.pad, explicit loops over output positions)."""
    kh, kw = layer.kernel_size
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    xp = F.pad(x, (pw, pw, ph, ph))
    ho, wo = layer.output_size(x.size(2), x.size(3))
    w = layer.weight.detach()
    out = torch.empty(x.size(0), layer.out_channels, ho, wo, dtype=torch.float64)
    for i in range(ho):
        for j in range(wo):
            patch = xp[
                :, :, i * sh : i * sh + dh * (kh - 1) + 1 : dh, j * sw : j * sw + dw * (kw - 1) + 1 : dw
            ]
            out[:, :, i, j] = reference_dist(patch.reshape(x.size(0), -1), w, layer.p, layer.groups)
    return out


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(3, 2), stride=(1, 2), padding=(0, 1), dilation=(2, 1)),
        dict(kernel_size=3, padding=1, groups=2),
    ],
)
@pytest.mark.parametrize("p", [2.0, 8.0, math.inf])
def test_norm_dist_conv_matches_sliding_window(kw, p) -> None:
    torch.manual_seed(2)
    layer = NormDistConv(4, 6, bias=False, mean_shift=False, p=p, **kw).double()
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    y = layer(x)
    ref = _conv_reference(x, layer)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-8)


def test_identity_init_is_x_plus_constant() -> None:
    torch.manual_seed(3)
    layer = NormDist(16, 40, bias=False, identity_val=10.0).eval()  # zero running mean
    x = torch.rand(8, 16) * 2 - 1
    idx = torch.arange(40) % 16
    torch.testing.assert_close(layer(x), x[:, idx] + 10.0, rtol=0, atol=1e-5)
    conv = NormDistConv(3, 6, 3, padding=1, bias=False, identity_val=10.0).eval()
    xc = torch.rand(2, 3, 5, 5) * 2 - 1
    torch.testing.assert_close(conv(xc), xc[:, torch.arange(6) % 3] + 10.0, rtol=0, atol=1e-5)


def test_identity_init_skipped_when_narrowing() -> None:
    torch.manual_seed(4)
    layer = NormDist(16, 10, identity_val=10.0)
    assert layer.weight.abs().max() < 10.0


def test_mean_shift_train_and_eval() -> None:
    ms = MeanShift(3, momentum=0.1)
    x = torch.randn(10, 3, 4) + torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1)
    mean = x.mean(dim=(0, 2))
    lo, hi = x - 0.1, x + 0.2
    out, lo2, hi2 = ms.propagate(x, lo, hi)
    torch.testing.assert_close(out, x - mean.view(1, 3, 1))
    torch.testing.assert_close(lo2, lo - mean.view(1, 3, 1))  # bounds get the clean batch mean
    torch.testing.assert_close(hi2, hi - mean.view(1, 3, 1))
    torch.testing.assert_close(ms.running_mean, 0.1 * mean)
    ms.eval()
    out = ms(x)
    torch.testing.assert_close(out, x - (0.1 * mean).view(1, 3, 1))
    torch.testing.assert_close(ms.running_mean, 0.1 * mean)  # unchanged in eval
    box = ms.interval_forward(Interval(lo, hi))
    torch.testing.assert_close(box.lower, lo - (0.1 * mean).view(1, 3, 1))
    ms.train()
    with pytest.raises(ValueError, match="training mode"):
        ms.interval_forward(Interval(lo, hi))


@pytest.mark.parametrize("layer_kind", ["fc", "conv"])
def test_interval_forward_contains_samples(layer_kind) -> None:
    torch.manual_seed(5)
    if layer_kind == "fc":
        layer = NormDist(10, 12, groups=2, identity_val=10.0).eval()
        x = torch.randn(4, 10)
    else:
        layer = NormDistConv(2, 4, 3, stride=2, padding=1, groups=2).eval()
        x = torch.randn(4, 2, 6, 6)
    with torch.no_grad():
        layer.mean_shift.running_mean.normal_()
    box = Interval.from_eps(x, 0.3)
    with torch.no_grad():
        out = layer.interval_forward(box)
        for _ in range(50):
            s = x + (torch.rand_like(x) * 2 - 1) * 0.3
            assert bool(out.contains(layer(s), atol=1e-5).all())
        # at p = inf the layer is 1-Lipschitz: the box is within eps of the clean output
        assert float((out.upper - layer(x)).max()) <= 0.3 + 1e-5
        assert float((layer(x) - out.lower).max()) <= 0.3 + 1e-5


def test_bounds_need_p_inf() -> None:
    layer = NormDist(4, 4, p=8.0).eval()
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="p = inf"):
        layer.interval_forward(Interval.from_eps(x, 0.1))
    with at_p(layer, math.inf):
        layer.interval_forward(Interval.from_eps(x, 0.1))
    assert layer.p == 8.0


def test_set_get_p_and_errors() -> None:
    net = torch.nn.Sequential(NormDist(4, 4), NormDist(4, 2))
    set_p(net, 8)
    assert get_p(net) == 8.0 and len(norm_dist_layers(net)) == 2
    with pytest.raises(ValueError, match="p must be"):
        set_p(net, 0)
    with pytest.raises(ValueError, match="p must be"):
        NormDist(4, 4, p=-1.0)
    with pytest.raises(ValueError, match="divisible by groups"):
        NormDist(5, 4, groups=2)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(B, 4\)"):
        NormDist(4, 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        NormDistConv(3, 4, 3)(torch.randn(2, 1, 5, 5))


def test_gradients_flow() -> None:
    torch.manual_seed(6)
    layer = NormDist(6, 5, p=8.0)
    x = torch.randn(3, 6, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    assert torch.isfinite(layer.weight.grad).all()
