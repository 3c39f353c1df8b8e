"""Specifications ``C z`` on the logits ``z``, margin bounds and certification.

``margin_spec(y, K)`` has shape ``(B, K-1, K)``: row ``i`` of sample ``b`` is ``e_y - e_j`` for the
``i``-th class ``j != y`` in increasing order (auto_LiRPA's ``get_spec_matrix`` layout); ``C z`` are
the margins ``z_y - z_j``. A sample is certified when every margin's lower bound is > 0.

``ibp_spec_bounds`` merges ``C`` into the model's last ``Linear`` layer (``W' = C W``, ``b' = C b``)
and bounds ``W' h + b'`` from the interval of ``h``: the correlation between ``z_y`` and ``z_j`` is kept,
which is never looser (and usually much tighter) than bounding the logits first and then applying
``C`` to their interval (:func:`interval_spec`). Models that do not end with a plain ``Linear``
(possibly nested in ``Sequential``s) fall back to that looser way, which is still sound.

    >>> lb = ibp_margin_lower(model, Interval.from_eps(x, eps, 0.0, 1.0), y)   # (B, K-1)
    >>> certified(lb)                                                          # (B,) bool
    >>> loss = F.cross_entropy(torch.cat([torch.zeros_like(lb[:, :1]), -lb], 1), torch.zeros_like(y))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from certcore.bounds.ibp import _check_inputs, _has_hooks, _is_plain, _propagate
from certcore.bounds.interval import Interval

__all__ = ["certified", "ibp_margin_lower", "ibp_spec_bounds", "interval_spec", "margin_spec"]


def _check_labels(y: object, num_classes: int, batch: int | None = None) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class indices (torch.long), got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"y must be 1-D (batch,), got shape {tuple(y.shape)}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"y has {y.shape[0]} labels but the batch has {batch} samples")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if y.numel() and bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got min {int(y.min())} and max {int(y.max())}"
        )
    return y.long()


def margin_spec(
    y: Tensor, num_classes: int, *, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> Tensor:
    """``C`` of shape ``(B, K-1, K)`` with rows ``e_y - e_j`` for ``j != y`` (increasing ``j``)."""
    y = _check_labels(y, num_classes)
    device = y.device if device is None else device
    dtype = torch.get_default_dtype() if dtype is None else dtype
    eye = torch.eye(num_classes, dtype=dtype, device=device)
    y = y.to(device)
    full = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K); row y is zero
    keep = torch.arange(num_classes, device=device).unsqueeze(0) != y.unsqueeze(1)  # (B, K)
    return full[keep].reshape(y.shape[0], num_classes - 1, num_classes)


def _check_spec(C: Tensor, box: Interval) -> Tensor:
    if not isinstance(C, Tensor) or not C.is_floating_point():
        raise TypeError("C must be a floating torch.Tensor of shape (B, S, K) or (S, K)")
    if C.dim() == 2:
        C = C.unsqueeze(0).expand(box.shape[0], -1, -1)
    if C.dim() != 3 or C.shape[0] != box.shape[0] or C.shape[2] != box.shape[-1] or box.lower.dim() != 2:
        raise ValueError(
            f"C of shape {tuple(C.shape)} does not fit outputs of shape {tuple(box.shape)}: expected outputs "
            "(B, K) and C (B, S, K) or (S, K)"
        )
    if C.dtype != box.dtype:
        raise TypeError(f"C has dtype {C.dtype} but the bounds have dtype {box.dtype}")
    return C


def interval_spec(box: Interval, C: Tensor) -> Interval:
    """Bounds of ``C z`` given only the interval of ``z`` (B, K): the looser, spec-after-logits way."""
    C = _check_spec(C, box)
    center = torch.einsum("bsk,bk->bs", C, box.center)
    radius = torch.einsum("bsk,bk->bs", C.abs(), box.radius)
    return Interval(center - radius, center + radius, check=False)


def _merged_linear(layer: nn.Linear, box: Interval, C: Tensor) -> Interval:
    if box.lower.dim() != 2 or box.shape[-1] != layer.in_features:
        raise ValueError(f"the last Linear expects (B, {layer.in_features}) inputs, got {tuple(box.shape)}")
    if C.dim() == 2:
        C = C.unsqueeze(0).expand(box.shape[0], -1, -1)
    if C.dim() != 3 or C.shape[0] != box.shape[0] or C.shape[2] != layer.out_features:
        raise ValueError(
            f"C of shape {tuple(C.shape)} does not fit the last Linear (out_features={layer.out_features}) "
            f"and batch {box.shape[0]}: expected (B, S, {layer.out_features}) or (S, {layer.out_features})"
        )
    if C.dtype != layer.weight.dtype:
        raise TypeError(f"C has dtype {C.dtype} but the model has dtype {layer.weight.dtype}")
    w = torch.matmul(C, layer.weight)  # (B, S, in)
    center = torch.einsum("bsi,bi->bs", w, box.center)
    if layer.bias is not None:
        center = center + torch.matmul(C, layer.bias)
    radius = torch.einsum("bsi,bi->bs", w.abs(), box.radius)
    return Interval(center - radius, center + radius, check=False)


def _propagate_spec(
    m: nn.Module, box: Interval, clean: Tensor | None, path: str, C: Tensor
) -> tuple[Interval, Tensor | None]:
    if not hasattr(m, "interval_forward") and not _has_hooks(m):
        if _is_plain(m, nn.Sequential) and len(m) > 0:
            names = list(m._modules)
            for name in names[:-1]:
                box, clean = _propagate(m._modules[name], box, clean, f"{path}{name}", None)
            return _propagate_spec(m._modules[names[-1]], box, clean, f"{path}{names[-1]}.", C)
        if _is_plain(m, nn.Linear):
            return _merged_linear(m, box, C), (m(clean) if clean is not None else None)
    out, clean_out = _propagate(m, box, clean, path.rstrip("."), None)
    return interval_spec(out, C), clean_out


def ibp_spec_bounds(
    model: nn.Module,
    box: Interval,
    C: Tensor,
    *,
    clean: Tensor | None = None,
    return_clean: bool = False,
    check: bool = True,
) -> Interval | tuple[Interval, Tensor]:
    """IBP bounds of ``C @ model(x)`` (shape ``(B, S)``) with ``C`` merged into the last Linear layer.

    ``C``: ``(B, S, K)`` or ``(S, K)``. ``clean``, ``return_clean`` and ``check`` as in
    :func:`certcore.bounds.ibp`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_inputs(box, clean, return_clean, check)
    if not isinstance(C, Tensor) or not C.is_floating_point():
        raise TypeError("C must be a floating torch.Tensor of shape (B, S, K) or (S, K)")
    out, clean_out = _propagate_spec(model, box, clean, "", C)
    return (out, clean_out) if return_clean else out


def _last_linear(m: nn.Module) -> nn.Linear | None:
    while _is_plain(m, nn.Sequential) and len(m) > 0 and not hasattr(m, "interval_forward"):
        m = m[-1]
    return m if _is_plain(m, nn.Linear) else None


def ibp_margin_lower(
    model: nn.Module,
    box: Interval,
    y: Tensor,
    *,
    num_classes: int | None = None,
    clean: Tensor | None = None,
    return_clean: bool = False,
    check: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """Lower bounds of the margins ``z_y - z_j`` (``j != y``), shape ``(B, K-1)``, from IBP with the
    margin spec merged into the last Linear layer. ``num_classes`` defaults to that layer's
    ``out_features`` (or, for models not ending in a Linear, the width of the logit bounds).
    ``return_clean=True`` also returns ``model(clean)`` (the logits) from the same pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_inputs(box, clean, return_clean, check)
    if num_classes is None:
        last = _last_linear(model)
        if last is None:  # no Linear to merge into: bound the logits, then apply C (looser, sound)
            logits_box, clean_out = _propagate(model, box, clean, "", None)
            k = logits_box.shape[-1]
            _check_labels(y, k, box.shape[0])
            C = margin_spec(y, k, dtype=box.dtype, device=box.device)
            lower = interval_spec(logits_box, C).lower
            return (lower, clean_out) if return_clean else lower
        num_classes = last.out_features
    _check_labels(y, num_classes, box.shape[0])
    C = margin_spec(y, num_classes, dtype=box.dtype, device=box.device)
    out, clean_out = _propagate_spec(model, box, clean, "", C)
    return (out.lower, clean_out) if return_clean else out.lower


def certified(lower_margins: Tensor) -> Tensor:
    """``(B,)`` bool: every margin lower bound is strictly positive (a tie is not certified)."""
    if not isinstance(lower_margins, Tensor) or lower_margins.dim() < 1:
        raise ValueError("lower_margins must be a tensor of shape (B, K-1) (or (B, ...) of margins)")
    if lower_margins.dim() == 1:
        raise ValueError(
            f"lower_margins must be (B, K-1), got 1-D shape {tuple(lower_margins.shape)}; for one margin per "
            "sample use lower_margins.unsqueeze(1)"
        )
    return (lower_margins > 0).flatten(1).all(dim=1)
