"""IBP rules: the interval image of one layer. Every rule is differentiable in the box and the layer's
parameters (so IBP training works) and returns an ``Interval`` built without value checks.

Affine layers use the centre/radius form ``W c + b ± |W| r``, which equals the per-neuron sum of
``min/max(w l, w u)``. Monotone maps (ReLU, Tanh, Sigmoid, pools) are applied to each end.

The bounds are exact interval arithmetic in real numbers; in floating point they can be off by
rounding (about machine epsilon times the magnitude of the sums), which is what the soundness kit's
tolerance ``atol``/``rtol`` allows for.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds.interval import Interval

__all__ = [
    "batchnorm_affine",
    "interval_linear",
    "interval_conv2d",
    "interval_batchnorm",
    "interval_elementwise_affine",
    "interval_monotone",
    "interval_relu",
    "interval_leaky_relu",
    "interval_tanh",
    "interval_sigmoid",
    "interval_add",
    "interval_flatten",
    "interval_avgpool",
    "interval_maxpool",
]


def _check_dtype(box: Interval, t: Tensor, what: str) -> None:
    if t.dtype != box.dtype:
        raise TypeError(
            f"{what} has dtype {t.dtype} but the interval has dtype {box.dtype}; "
            f"convert the model or the input (e.g. model.to({box.dtype}))"
        )
    if t.device != box.device:
        raise ValueError(f"{what} is on {t.device} but the interval is on {box.device}")


def interval_linear(box: Interval, weight: Tensor, bias: Tensor | None = None) -> Interval:
    """Bounds of ``x @ W.T + b`` for ``x`` in ``box``: centre ``W c + b``, radius ``|W| r``."""
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if box.lower.dim() < 1 or box.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"interval of shape {tuple(box.shape)} does not fit a linear layer "
            f"with in_features={weight.shape[1]} "
            "(expected the last dimension to equal in_features)"
        )
    _check_dtype(box, weight, "weight")
    center = F.linear(box.center, weight, bias)
    radius = F.linear(box.radius, weight.abs())
    return Interval(center - radius, center + radius, check=False)


def interval_conv2d(box: Interval, conv: nn.Module) -> Interval:
    """Bounds of ``conv(x)`` for an ``nn.Conv1d/2d/3d`` with any stride, padding (any padding mode),
    dilation and groups: centre ``conv(c)``, radius ``|W| * r`` (same geometry, no bias)."""
    if not isinstance(conv, nn.modules.conv._ConvNd) or conv.transposed:
        raise TypeError(f"interval_conv2d needs an nn.Conv1d/Conv2d/Conv3d, got {type(conv).__name__}")
    n_spatial = len(conv.kernel_size)
    if box.lower.dim() not in (n_spatial + 1, n_spatial + 2):
        raise ValueError(
            f"interval of shape {tuple(box.shape)} does not fit {type(conv).__name__}: expected "
            f"{n_spatial + 2}-D input (batch, channels, {n_spatial} spatial dims)"
        )
    if box.shape[-n_spatial - 1] != conv.in_channels:
        raise ValueError(
            f"interval has {box.shape[-n_spatial - 1]} channels but {type(conv).__name__} expects "
            f"in_channels={conv.in_channels}"
        )
    _check_dtype(box, conv.weight, f"{type(conv).__name__}.weight")
    center = conv._conv_forward(box.center, conv.weight, conv.bias)
    radius = conv._conv_forward(box.radius, conv.weight.abs(), None)
    return Interval(center - radius, center + radius, check=False)


def interval_elementwise_affine(box: Interval, scale: Tensor, shift: Tensor | None = None) -> Interval:
    """Bounds of ``scale * x + shift`` (broadcast elementwise); ``scale`` may be negative."""
    center = box.center * scale
    if shift is not None:
        center = center + shift
    radius = box.radius * scale.abs()
    return Interval(center - radius, center + radius, check=False)


def _batch_stats(clean: Tensor, n_channels: int) -> tuple[Tensor, Tensor]:
    dims = [0, *range(2, clean.dim())]
    if clean.dim() < 2 or clean.shape[1] != n_channels:
        raise ValueError(
            f"clean_input of shape {tuple(clean.shape)} does not have {n_channels} channels in dim 1"
        )
    return clean.mean(dim=dims), clean.var(dim=dims, unbiased=False)


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """BatchNorm with statistics (mean, var) as a per-channel affine map ``scale·x + shift``:
    ``scale = γ/√(var+eps)``, ``shift = β − mean·scale`` (γ = 1, β = 0 without affine parameters)."""
    scale = 1.0 / torch.sqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def interval_batchnorm(
    box: Interval, bn: nn.modules.batchnorm._BatchNorm, clean_input: Tensor | None = None
) -> Interval:
    """Bounds through BatchNorm as the per-channel affine map ``w/√(var+eps)·x + b − mean·w/√(var+eps)``.

    Eval mode (with running statistics): ``running_mean``/``running_var``. Train mode (or no running
    statistics): the *clean batch's* statistics, ``clean_input.mean/var(unbiased=False)`` over every
    dimension but the channel one, as in the forward pass and in auto_LiRPA — never statistics of the
    bounds. ``clean_input`` is the clean activation entering this layer; it is required in train mode.
    Running statistics are not updated here.
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"interval_batchnorm needs an nn.BatchNorm1d/2d/3d, got {type(bn).__name__}")
    n = bn.num_features
    if box.lower.dim() < 2 or box.shape[1] != n:
        raise ValueError(
            f"interval of shape {tuple(box.shape)} does not fit {type(bn).__name__}({n}): "
            f"expected (batch, {n}, ...)"
        )
    use_batch_stats = bn.training or bn.running_mean is None or bn.running_var is None
    if use_batch_stats:
        if clean_input is None:
            raise ValueError(
                f"{type(bn).__name__} is in train mode (or has no running statistics): "
                "IBP uses the clean batch's "
                "statistics, so pass the clean activation (ibp(..., clean=x)) or put the model in eval mode"
            )
        _check_dtype(box, clean_input, "clean_input")
        mean, var = _batch_stats(clean_input, n)
    else:
        mean, var = bn.running_mean, bn.running_var
        _check_dtype(box, mean, f"{type(bn).__name__}.running_mean")
    scale, shift = batchnorm_affine(bn, mean, var)
    view = (1, n) + (1,) * (box.lower.dim() - 2)
    return interval_elementwise_affine(box, scale.reshape(view), shift.reshape(view))


def interval_monotone(box: Interval, fn: Callable[[Tensor], Tensor]) -> Interval:
    """Bounds of a nondecreasing elementwise (or pooling-like monotone) map: ``[fn(l), fn(u)]``."""
    return Interval(fn(box.lower), fn(box.upper), check=False)


def interval_relu(box: Interval) -> Interval:
    return interval_monotone(box, F.relu)


def interval_tanh(box: Interval) -> Interval:
    return interval_monotone(box, torch.tanh)


def interval_sigmoid(box: Interval) -> Interval:
    return interval_monotone(box, torch.sigmoid)


def interval_leaky_relu(box: Interval, negative_slope: float = 0.01) -> Interval:
    """LeakyReLU; monotone for ``negative_slope >= 0``, and exact for a negative slope too (then the map
    is convex with its minimum at 0)."""

    def fn(t: Tensor) -> Tensor:
        return F.leaky_relu(t, negative_slope)

    if negative_slope >= 0:
        return interval_monotone(box, fn)
    lo, hi = box.lower, box.upper
    zero = torch.zeros((), dtype=lo.dtype, device=lo.device)
    lower = fn(torch.minimum(torch.maximum(zero, lo), hi))
    upper = torch.maximum(fn(lo), fn(hi))
    return Interval(lower, upper, check=False)


def interval_add(a: Interval, b: Interval) -> Interval:
    """Bounds of ``x + y`` for ``x`` in ``a``, ``y`` in ``b`` (shapes must broadcast)."""
    if a.dtype != b.dtype:
        raise TypeError(f"cannot add intervals of dtypes {a.dtype} and {b.dtype}")
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError as exc:
        raise ValueError(f"cannot add intervals of shapes {tuple(a.shape)} and {tuple(b.shape)}") from exc
    return Interval(a.lower + b.lower, a.upper + b.upper, check=False)


def interval_flatten(box: Interval, start_dim: int = 1, end_dim: int = -1) -> Interval:
    return Interval(box.lower.flatten(start_dim, end_dim), box.upper.flatten(start_dim, end_dim), check=False)


def interval_avgpool(box: Interval, pool: nn.Module) -> Interval:
    """Average pooling is linear with nonnegative weights (zero padding included), so it is applied to
    each end: exact interval image."""
    return interval_monotone(box, pool)


def interval_maxpool(box: Interval, pool: nn.Module) -> Interval:
    """Max pooling is monotone in every input: ``[pool(l), pool(u)]``."""
    if getattr(pool, "return_indices", False):
        raise ValueError(f"{type(pool).__name__}(return_indices=True) is not supported by IBP")
    return interval_monotone(box, pool)
