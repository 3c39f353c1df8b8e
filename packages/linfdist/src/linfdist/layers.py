"""ℓ_p-distance layers: ``NormDist`` (fully connected), ``NormDistConv`` and ``MeanShift``.

A distance neuron computes ``y_o = ‖x − w_o‖_p`` (then a mean shift and an optional bias). At
``p = ∞`` every layer is 1-Lipschitz in ℓ∞, and its exact interval image is given by
``certcore.ops.bound_inf_dist``. The arithmetic lives in certcore's ops; these modules only arrange
shapes, initialise weights, keep the current ``p`` and implement ``interval_forward`` so that
``certcore.bounds.ibp`` can propagate boxes through them.

Every layer has three entry points:

- ``forward(x)``: the clean output at the current ``p``;
- ``interval_forward(box)``: the interval image of a box (only at ``p = ∞``);
- ``propagate(x, lower, upper)``: both at once, sharing one ``MeanShift`` batch mean (any argument
  may be ``None``; ``lower``/``upper`` come together). Models use this in training, where the mean
  of the clean batch is also subtracted from the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds import Interval
from certcore.ops import bound_inf_dist, norm_dist

__all__ = [
    "MeanShift",
    "NormDistBase",
    "NormDist",
    "NormDistConv",
    "norm_dist_layers",
    "set_p",
    "get_p",
    "at_p",
    "is_inf_and_eval",
]

_Triplet = tuple[Tensor | None, Tensor | None, Tensor | None]


class _TripletLayer(nn.Module):
    """A layer that maps a clean input and interval bounds (any of them None) in one ``propagate``
    call; the forward pass and IBP's ``interval_forward`` are its two uses."""

    def propagate(self, x: Tensor | None, lower: Tensor | None, upper: Tensor | None) -> _Triplet:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.propagate(x, None, None)[0]

    def interval_forward(self, box: Interval) -> Interval:
        _, lower, upper = self.propagate(None, box.lower, box.upper)
        return Interval(lower, upper, check=False)


class MeanShift(_TripletLayer):
    """BatchNorm without the variance: subtract the per-channel mean.

    Training: the mean over batch and spatial positions of the clean input (running mean updated
    with ``momentum``); eval: ``running_mean``. The same shift is applied to bounds, so the layer is
    an exact translation of a box. Inputs are ``(B, C)`` or ``(B, C, L)``.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, affine: bool = False):
        super().__init__()
        self.num_features = num_features
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def _shift(self, x: Tensor | None) -> Tensor:
        if self.training:
            if x is None:
                raise ValueError(
                    "MeanShift in training mode needs the clean batch to compute its mean; "
                    "call model.eval() before propagating intervals alone"
                )
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(mean.detach(), alpha=self.momentum)
        else:
            mean = self.running_mean
        if self.bias is not None:
            mean = mean - self.bias
        return mean

    @staticmethod
    def _sub(z: Tensor | None, mean: Tensor) -> Tensor | None:
        if z is None:
            return None
        return z - mean.view(1, -1, *([1] * (z.dim() - 2)))

    def propagate(self, x: Tensor | None, lower: Tensor | None, upper: Tensor | None) -> _Triplet:
        mean = self._shift(x)
        return self._sub(x, mean), self._sub(lower, mean), self._sub(upper, mean)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, affine={self.bias is not None}"


class NormDistBase(_TripletLayer):
    """Shared part of the distance layers: weight ``(out, in/groups)``, ``p``, mean shift, bias.

    Works on ``(B, in_features, L)`` tensors. Weights are ``N(0, std²)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        p: float = math.inf,
        groups: int = 1,
        bias: bool = True,
        std: float = 1.0,
        mean_shift: bool = True,
    ):
        super().__init__()
        if groups < 1 or in_features % groups or out_features % groups:
            raise ValueError(
                f"in_features ({in_features}) and out_features ({out_features}) must both be "
                f"divisible by groups ({groups})"
            )
        _check_p(p)
        self.groups = groups
        self.p = float(p)
        self.weight = nn.Parameter(torch.randn(out_features, in_features // groups) * std)
        self.mean_shift = MeanShift(out_features) if mean_shift else None
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def _propagate3d(self, x: Tensor | None, lower: Tensor | None, upper: Tensor | None) -> _Triplet:
        if x is not None:
            x = norm_dist(x, self.weight, self.p, groups=self.groups)
        if lower is not None or upper is not None:
            if lower is None or upper is None:
                raise ValueError("lower and upper bounds must be given together")
            if not math.isinf(self.p):
                raise ValueError(
                    f"interval bounds through a NormDist layer are exact only at p = inf; this layer "
                    f"is at p = {self.p} (use linfdist.at_p(model, math.inf))"
                )
            lower, upper = bound_inf_dist(lower, upper, self.weight, groups=self.groups)
        if self.mean_shift is not None:
            x, lower, upper = self.mean_shift.propagate(x, lower, upper)
        if self.bias is not None:
            b = self.bias.view(1, -1, 1)
            x, lower, upper = (None if z is None else z + b for z in (x, lower, upper))
        return x, lower, upper


class NormDist(NormDistBase):
    """Fully connected ℓ_p-distance layer on ``(B, in_features)`` inputs.

    ``identity_val``: if given and ``in_features ≤ out_features``, ``W[i, i mod in_g] = −identity_val``
    so that, for inputs small against ``identity_val``, ``y_i = x_{i mod in} + identity_val`` at
    ``p = ∞`` (an identity map plus a constant that the mean shift removes).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        groups: int = 1,
        bias: bool = True,
        identity_val: float | None = None,
        p: float = math.inf,
        std: float = 1.0,
        mean_shift: bool = True,
    ):
        super().__init__(
            in_features, out_features, p=p, groups=groups, bias=bias, std=std, mean_shift=mean_shift
        )
        self.in_features = in_features
        self.out_features = out_features
        if identity_val is not None and in_features <= out_features:
            in_g = in_features // groups
            with torch.no_grad():
                rows = torch.arange(out_features)
                self.weight[rows, rows % in_g] = -float(identity_val)

    def _check_input(self, z: Tensor) -> None:
        if z.dim() != 2 or z.size(1) != self.in_features:
            raise ValueError(
                f"NormDist({self.in_features} -> {self.out_features}) expects inputs of shape "
                f"(B, {self.in_features}); got {tuple(z.shape)}"
            )

    def propagate(self, x: Tensor | None, lower: Tensor | None, upper: Tensor | None) -> _Triplet:
        for z in (x, lower, upper):
            if z is not None:
                self._check_input(z)
        out = self._propagate3d(*(None if z is None else z.unsqueeze(-1) for z in (x, lower, upper)))
        return tuple(None if z is None else z.squeeze(-1) for z in out)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}, p={self.p:g}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}"


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class NormDistConv(NormDistBase):
    """Convolutional ℓ_p-distance layer: the FC distance applied to every unfolded patch.

    Inputs ``(B, C, H, W)``; zero padding (the same zeros pad the bounds, so boxes stay exact).
    Identity init sets the centre tap ``W[i, i mod C_g, kh//2, kw//2] = −identity_val`` when
    ``in_channels ≤ out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        identity_val: float | None = None,
        p: float = math.inf,
        std: float = 1.0,
        mean_shift: bool = True,
    ):
        if groups < 1 or in_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
        self.kernel_size = _pair(kernel_size)
        kh, kw = self.kernel_size
        super().__init__(
            in_channels * kh * kw, out_channels, p=p, groups=groups, bias=bias, std=std, mean_shift=mean_shift
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        if identity_val is not None and in_channels <= out_channels:
            c_g = in_channels // groups
            with torch.no_grad():
                w = self.weight.view(out_channels, c_g, kh, kw)
                rows = torch.arange(out_channels)
                w[rows, rows % c_g, kh // 2, kw // 2] = -float(identity_val)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        return tuple(  # type: ignore[return-value]
            (s + 2 * p - d * (k - 1) - 1) // st + 1
            for s, p, d, k, st in zip((h, w), self.padding, self.dilation, self.kernel_size, self.stride)
        )

    def _unfold(self, z: Tensor) -> Tensor:
        if z.dim() != 4 or z.size(1) != self.in_channels:
            raise ValueError(
                f"NormDistConv({self.in_channels} -> {self.out_channels}) expects inputs of shape "
                f"(B, {self.in_channels}, H, W); got {tuple(z.shape)}"
            )
        return F.unfold(z, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)

    def propagate(self, x: Tensor | None, lower: Tensor | None, upper: Tensor | None) -> _Triplet:
        ref = next(z for z in (x, lower, upper) if z is not None)
        h, w = self.output_size(ref.size(2), ref.size(3))
        out = self._propagate3d(*(None if z is None else self._unfold(z) for z in (x, lower, upper)))
        return tuple(None if z is None else z.reshape(z.size(0), -1, h, w) for z in out)  # type: ignore

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, p={self.p:g}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}"


def _check_p(p: float) -> None:
    if not (isinstance(p, int | float) and p > 0 and not math.isnan(p)):
        raise ValueError(f"p must be a number in (0, inf]; got {p!r}")


def norm_dist_layers(model: nn.Module) -> list[NormDistBase]:
    """Every distance layer in ``model`` (DDP wrappers included), in module order."""
    return [m for m in model.modules() if isinstance(m, NormDistBase)]


def set_p(model: nn.Module, p: float) -> None:
    """Set ``p`` of every distance layer of ``model``."""
    _check_p(p)
    for m in norm_dist_layers(model):
        m.p = float(p)


def get_p(model: nn.Module) -> float:
    """The common ``p`` of the distance layers (an error if they differ or there are none)."""
    ps = {m.p for m in norm_dist_layers(model)}
    if len(ps) != 1:
        raise ValueError(f"expected one common p over the NormDist layers; found {sorted(ps) or 'no layers'}")
    return ps.pop()


@contextmanager
def at_p(model: nn.Module, p: float) -> Iterator[nn.Module]:
    """Temporarily set every distance layer to ``p`` (restoring each layer's own ``p`` after)."""
    layers = norm_dist_layers(model)
    saved = [m.p for m in layers]
    set_p(model, p)
    try:
        yield model
    finally:
        for m, q in zip(layers, saved):
            m.p = q


def is_inf_and_eval(model: nn.Module) -> bool:
    """True iff every distance layer is at ``p = ∞`` and in eval mode (so IBP is exact and sound)."""
    return all(math.isinf(m.p) and not m.training for m in norm_dist_layers(model))
