"""Public, checked, differentiable wrappers of the certcore ops.

Every check happens here, before an op runs, with a message that names the argument and what was
expected. Shapes, dtypes, devices and ``p`` are checked always; the data check of
``bound_inf_dist`` (``lower <= upper``, ``w`` finite) reads the tensors, which costs a device
synchronisation on a GPU, and is skipped while ``torch.compile`` traces.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["bound_inf_dist", "norm_dist"]

_FLOAT_DTYPES = (torch.float32, torch.float64)


def _check_tensor(name: str, t: object, fn: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _check_groups(groups: object, fn: str) -> int:
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive integer, got {groups!r}")
    return int(groups)


def _check_p(p: object, fn: str) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(
            f"{fn}: p must be a real number in (0, inf] (math.inf for the ℓ∞ distance), got {p!r}"
        )
    p = float(p)
    if math.isnan(p) or p <= 0:
        raise ValueError(f"{fn}: p must be in (0, inf] (math.inf for the ℓ∞ distance), got {p}")
    return p


def _check_input_and_weight(x: Tensor, w: Tensor, groups: int, fn: str, xname: str = "x") -> None:
    if x.dim() not in (2, 3):
        raise ValueError(f"{fn}: {xname} must be 2-D (B, CI) or 3-D (B, CI, HW), got shape {tuple(x.shape)}")
    if w.dim() != 2:
        raise ValueError(f"{fn}: w must be 2-D (CO, CI/groups), got shape {tuple(w.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{fn}: {xname} must be float32 or float64, got {x.dtype}")
    if w.dtype != x.dtype:
        raise TypeError(f"{fn}: w must have the dtype of {xname} ({x.dtype}), got {w.dtype}")
    if w.device != x.device:
        raise ValueError(f"{fn}: w must be on the device of {xname} ({x.device}), got {w.device}")
    CI, CO = x.shape[1], w.shape[0]
    if CI < 1:
        raise ValueError(f"{fn}: {xname} must have at least one input channel, got shape {tuple(x.shape)}")
    if CI % groups:
        raise ValueError(
            f"{fn}: {xname} has CI = {CI} input channels, which is not divisible by groups = {groups}"
        )
    if CO % groups:
        raise ValueError(
            f"{fn}: w has CO = {CO} output channels, which is not divisible by groups = {groups}"
        )
    if w.shape[1] != CI // groups:
        raise ValueError(
            f"{fn}: w.shape[1] must be CI/groups = {CI}/{groups} = {CI // groups}, "
            f"got w of shape {tuple(w.shape)}"
        )


def norm_dist(x: Tensor, w: Tensor, p: float, groups: int = 1) -> Tensor:
    """L_p distances between input vectors and weight rows, differentiable in x and w.

    Args:
        x: ``(B, CI)`` or ``(B, CI, HW)`` (e.g. ``F.unfold`` patches of a conv layer), float32/64.
        w: ``(CO, CI // groups)``, same dtype and device.
        p: in ``(0, inf]``; ``math.inf`` is the ℓ∞ distance.
        groups: output channel ``o`` of group ``g = o // (CO // groups)`` reads input channels
            ``[g * CI // groups, (g + 1) * CI // groups)``.

    Returns:
        ``(B, CO)`` or ``(B, CO, HW)``: ``y[b, o, s] = ||x[b, group(o), s] - w[o]||_p``.

    Gradients: finite p, ``dy/dx_i = sign(t_i) (|t_i| / y)^(p-1)`` with ``t = x - w`` (0 where
    ``y == 0``, i.e. ``x == w``: never NaN); ``p = inf``, the whole gradient goes to the first index
    reaching the max, with the sign of ``x_i - w_i``. NaN or infinite inputs propagate as in
    ``torch.linalg.vector_norm``.
    """
    fn = "norm_dist"
    _check_tensor("x", x, fn)
    _check_tensor("w", w, fn)
    groups = _check_groups(groups, fn)
    p = _check_p(p, fn)
    _check_input_and_weight(x, w, groups, fn)
    squeeze = x.dim() == 2
    x3 = x.unsqueeze(-1) if squeeze else x
    need_argmax = math.isinf(p) and torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    y, _ = torch.ops.certcore.norm_dist_forward(x3.contiguous(), w.contiguous(), p, groups, need_argmax)
    return y.squeeze(-1) if squeeze else y


def bound_inf_dist(lower: Tensor, upper: Tensor, w: Tensor, groups: int = 1) -> tuple[Tensor, Tensor]:
    """Exact interval bounds of an ℓ∞-distance layer: ``(y_lower, y_upper)``.

    For every ``x`` with ``lower <= x <= upper`` (elementwise), ``y_lower <= norm_dist(x, w, inf)
    <= y_upper``, and both bounds are reached at corners of the box:
    ``y_upper = max_i max(u_i - w_i, w_i - l_i)``, ``y_lower = max(0, max_i max(l_i - w_i, w_i - u_i))``.
    Differentiable in ``lower``, ``upper`` and ``w`` through the positions of the maxima (first
    index on ties; no gradient where ``y_lower`` is 0), for IBP training.

    Args:
        lower, upper: same shape, ``(B, CI)`` or ``(B, CI, HW)``; ``lower <= upper`` (±inf allowed,
            NaN not). An error is raised otherwise (no silent midpoint fix).
        w: ``(CO, CI // groups)``, finite.
        groups: as in ``norm_dist``.
    """
    fn = "bound_inf_dist"
    _check_tensor("lower", lower, fn)
    _check_tensor("upper", upper, fn)
    _check_tensor("w", w, fn)
    groups = _check_groups(groups, fn)
    _check_input_and_weight(lower, w, groups, fn, xname="lower")
    if upper.shape != lower.shape:
        raise ValueError(
            f"{fn}: upper must have the shape of lower {tuple(lower.shape)}, got {tuple(upper.shape)}"
        )
    if upper.dtype != lower.dtype:
        raise TypeError(f"{fn}: upper must have the dtype of lower ({lower.dtype}), got {upper.dtype}")
    if upper.device != lower.device:
        raise ValueError(f"{fn}: upper must be on the device of lower ({lower.device}), got {upper.device}")
    if not torch.compiler.is_compiling():
        with torch.no_grad():
            bad = ~(lower <= upper)
            if bool(bad.any()):
                n = int(bad.sum())
                raise ValueError(
                    f"{fn}: lower must be <= upper elementwise (and neither NaN); {n} of {bad.numel()} "
                    "entries violate it"
                )
            if not bool(torch.isfinite(w).all()):
                raise ValueError(f"{fn}: w must be finite; it holds NaN or infinity")
    squeeze = lower.dim() == 2
    lo = (lower.unsqueeze(-1) if squeeze else lower).contiguous()
    up = (upper.unsqueeze(-1) if squeeze else upper).contiguous()
    y_lo, y_up, _, _ = torch.ops.certcore.bound_inf_dist_forward(lo, up, w.contiguous(), groups)
    if squeeze:
        return y_lo.squeeze(-1), y_up.squeeze(-1)
    return y_lo, y_up
