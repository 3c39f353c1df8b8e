"""Argument checks shared by ``certcore.bounds``, ``certcore.attacks`` and ``certcore.testing``.

Every check raises ``ValueError`` (bad value) or ``TypeError`` (bad type) with a message that says
what was wrong and what was expected. The checks that look at tensor values (NaN, ranges) synchronise
with the device; the hot internal paths skip them.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

NormName = str  # "inf" or "2"


def parse_norm(norm: object) -> NormName:
    """``inf``/``"inf"``/``float("inf")``/``"linf"`` -> ``"inf"``; ``2``/``"2"``/``"l2"`` -> ``"2"``."""
    if isinstance(norm, str):
        key = norm.strip().lower()
        if key in {"inf", "linf", "l_inf", "infinity"}:
            return "inf"
        if key in {"2", "l2", "l_2"}:
            return "2"
    elif isinstance(norm, Real) and not isinstance(norm, bool):
        if math.isinf(norm) and norm > 0:
            return "inf"
        if norm == 2:
            return "2"
    raise ValueError(f"norm must be 'inf' (or float('inf')) or '2' (or 2), got {norm!r}")


def check_tensor(x: object, name: str, *, floating: bool = True, finite: bool = True) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {x.dtype}")
    if finite and floating and x.numel() and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} must be finite, found {n_nan} NaN and {n_inf} infinite entries")
    return x


def check_batched(x: Tensor, name: str) -> None:
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty leading batch dimension, got shape {tuple(x.shape)}")


def _as_tensor_like(value: object, like: Tensor, name: str, kinds: str, shape_hint: str = "") -> Tensor:
    """A float, or a tensor broadcastable to ``like``, as a tensor on ``like``'s device and dtype; not NaN.

    ``kinds`` names what ``value`` may be in the TypeError; ``shape_hint`` ends the shape error."""
    if isinstance(value, Tensor):
        t = value.to(device=like.device, dtype=like.dtype)
        try:
            shape = torch.broadcast_shapes(t.shape, like.shape)
        except RuntimeError:
            shape = None
        if shape != like.shape:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} must broadcast to the input shape {tuple(like.shape)}"
                + shape_hint
            )
    elif isinstance(value, Real) and not isinstance(value, bool):
        t = torch.tensor(float(value), device=like.device, dtype=like.dtype)
    else:
        raise TypeError(f"{name} must be {kinds}, got {type(value).__name__}")
    if t.numel() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name} must not be NaN")
    return t


def as_eps(eps: object, like: Tensor, name: str = "eps") -> Tensor:
    """eps as a tensor on ``like``'s device and dtype, broadcastable to ``like``; eps >= 0, finite."""
    if isinstance(eps, Tensor) and not (eps.is_floating_point() or eps.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a float or a floating tensor, got dtype {eps.dtype}")
    hint = " (use a scalar, a per-sample (B, 1, ..., 1) tensor or a per-feature tensor)"
    t = _as_tensor_like(eps, like, name, "a float or a tensor", hint)
    if t.numel() and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0, got minimum {float(t.min()):g}")
    if t.numel() and bool(torch.isinf(t).any()):
        raise ValueError(f"{name} must be finite (bound the input with data_min/data_max instead of eps=inf)")
    return t


def as_bound(value: object, like: Tensor, name: str) -> Tensor | None:
    """A data-range bound (float or tensor broadcastable to ``like``) as a tensor, or None."""
    if value is None:
        return None
    return _as_tensor_like(value, like, name, "None, a float or a tensor")


def data_range(
    x: Tensor, data_min: object, data_max: object, name: str = "x"
) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """Validate the data range and return ``(lo, hi, x_clamped)``.

    ``x`` may lie outside ``[data_min, data_max]`` by a few ulps (normalisation computed in another
    precision); it is then clamped into the range. Farther outside is an error.
    """
    lo = as_bound(data_min, x, "data_min")
    hi = as_bound(data_max, x, "data_max")
    if lo is not None and hi is not None and bool((lo > hi).any()):
        raise ValueError("data_min must be <= data_max everywhere")
    if lo is None and hi is None:
        return lo, hi, x
    tol = 16 * torch.finfo(x.dtype).eps * (1.0 + x.detach().abs())
    below = (lo - x - tol) if lo is not None else None
    above = (x - hi - tol) if hi is not None else None
    for side, excess, word in ((lo, below, "below data_min"), (hi, above, "above data_max")):
        if side is not None and bool((excess > 0).any()):
            n = int((excess > 0).sum())
            worst = float((excess + tol).max())
            raise ValueError(
                f"{name} lies {word} at {n} entries (by up to {worst:g}); "
                "inputs must be inside the data range "
                "(check that data_min/data_max are in the same (normalised) units as the input)"
            )
    return lo, hi, x.clamp(min=lo, max=hi)
