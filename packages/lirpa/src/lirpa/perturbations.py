"""Input perturbation sets.

``PerturbationLpNorm(eps, norm, x_L, x_U)``:

* ``norm=inf`` (``np.inf``, ``float("inf")`` or ``"inf"``): the box ``[x_L, x_U]`` when both are given
  (they take priority over ``eps``; ``x_L == x_U`` is allowed), else ``[x - eps, x + eps]``. Linear bounds
  ``A·x`` are concretised as ``A·c ± |A|·r`` with centre ``c = (x_U + x_L)/2`` and radius
  ``r = (x_U - x_L)/2``.
* ``norm=2`` or ``1``: the ball ``‖x - x₀‖_p <= eps`` around the clean input ``x₀``, concretised by the
  dual norm, ``A·x₀ ± eps‖A‖_q`` (``1/p + 1/q = 1``). IBP and the relaxations use the ball's bounding box
  ``[x₀ - eps, x₀ + eps]`` (intersected with ``[x_L, x_U]`` when those are given, which then describe the
  valid data range). ``eps`` is a float or a per-sample tensor (``(B,)`` or ``(B, 1, ..., 1)``).

Bad input (NaN/Inf, ``eps < 0``, ``x_L > x_U``, shapes that do not fit) raises ``ValueError`` naming the
argument.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

__all__ = ["PerturbationLpNorm", "parse_norm"]


def parse_norm(norm: object) -> float:
    if isinstance(norm, str):
        key = norm.strip().lower()
        table = {"inf": math.inf, "linf": math.inf, "infinity": math.inf, "2": 2.0, "l2": 2.0}
        table.update({"1": 1.0, "l1": 1.0})
        if key in table:
            return table[key]
    elif isinstance(norm, Real) and not isinstance(norm, bool):
        value = float(norm)
        if value in (1.0, 2.0, math.inf):
            return value
    raise ValueError(f"norm must be inf (np.inf, float('inf') or 'inf'), 2 or 1, got {norm!r}")


def _finite_tensor(t: object, name: str) -> Tensor:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor, got {type(t).__name__}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite: it holds {int((~torch.isfinite(t)).sum())} NaN/Inf entries")
    return t


class PerturbationLpNorm:
    """An ℓp perturbation of one input (see the module docstring)."""

    def __init__(self, eps: float | Tensor = 0.0, norm: object = math.inf, x_L=None, x_U=None):
        self.norm = parse_norm(norm)
        self.dual_norm = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[self.norm]
        if isinstance(eps, Tensor):
            _finite_tensor(eps, "eps")
        elif isinstance(eps, Real) and not isinstance(eps, bool):
            if not math.isfinite(float(eps)):
                raise ValueError(f"eps must be finite, got {eps!r}")
        else:
            raise ValueError(f"eps must be a float or a tensor, got {type(eps).__name__}")
        if (torch.as_tensor(eps) < 0).any():
            raise ValueError(f"eps must be >= 0, got minimum {float(torch.as_tensor(eps).min()):g}")
        if (x_L is None) != (x_U is None):
            raise ValueError("give both x_L and x_U, or neither")
        if x_L is not None:
            _finite_tensor(x_L, "x_L")
            _finite_tensor(x_U, "x_U")
            if x_L.shape != x_U.shape:
                raise ValueError(
                    f"x_L {tuple(x_L.shape)} and x_U {tuple(x_U.shape)} must have the same shape"
                )
            if bool((x_L > x_U).any()):
                raise ValueError(
                    f"x_L must be <= x_U everywhere; x_L > x_U at {int((x_L > x_U).sum())} entries "
                    f"(largest gap {float((x_L - x_U).max()):g})"
                )
        self.eps, self.x_L, self.x_U = eps, x_L, x_U

    def __repr__(self) -> str:
        box = "" if self.x_L is None else f", x_L/x_U of shape {tuple(self.x_L.shape)}"
        eps = self.eps if not isinstance(self.eps, Tensor) else f"tensor{tuple(self.eps.shape)}"
        return f"PerturbationLpNorm(norm={self.norm}, eps={eps}{box})"

    # --- used by the engine ----------------------------------------------------------------------
    def _eps_like(self, x: Tensor, per_sample: bool) -> Tensor:
        eps = torch.as_tensor(self.eps, dtype=x.dtype, device=x.device)
        if eps.dim() == 0:
            return eps.expand(x.shape[0]) if per_sample else eps
        if per_sample:
            if eps.shape[0] != x.shape[0] or eps[0].numel() != 1:
                raise ValueError(
                    f"eps of shape {tuple(eps.shape)} must be a scalar or per-sample (B,) / (B, 1, ..., 1) "
                    f"for norm={self.norm} with input of shape {tuple(x.shape)}"
                )
            return eps.reshape(x.shape[0])
        if eps.dim() == 1 and eps.shape[0] == x.shape[0] and x.dim() > 1:
            eps = eps.reshape(-1, *([1] * (x.dim() - 1)))
        try:
            ok = torch.broadcast_shapes(eps.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"eps of shape {tuple(eps.shape)} does not broadcast to the input {tuple(x.shape)}"
            )
        return eps

    def init(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Validate against the clean input ``x``; return the bounding box ``(lower, upper)``."""
        _finite_tensor(x, "x")
        if self.x_L is not None and self.x_L.shape != x.shape:
            raise ValueError(
                f"x_L/x_U of shape {tuple(self.x_L.shape)} do not match the input {tuple(x.shape)}"
            )
        if self.norm == math.inf:
            if self.x_L is not None:
                return self.x_L.to(x.dtype), self.x_U.to(x.dtype)
            eps = self._eps_like(x, per_sample=False)
            return x - eps, x + eps
        eps = self._eps_like(x, per_sample=True).reshape(-1, *([1] * (x.dim() - 1)))
        lower, upper = x - eps, x + eps
        if self.x_L is not None:
            lower = torch.maximum(lower, self.x_L.to(x.dtype))
            upper = torch.minimum(upper, self.x_U.to(x.dtype))
        return lower, upper

    def lp_center(self, x: Tensor) -> tuple[Tensor, Tensor, float] | None:
        """``(x₀, per-sample eps, dual q)`` for ℓp norms (p < inf), None for ℓ∞."""
        if self.norm == math.inf:
            return None
        return x, self._eps_like(x, per_sample=True), self.dual_norm

    def concretize(self, x: Tensor, box: tuple[Tensor, Tensor], A: Tensor, sign: float) -> Tensor:
        """``min`` (sign -1) or ``max`` (sign +1) of ``A·x'`` over the set; ``A`` has shape
        ``(spec, batch, *x.shape[1:])``, the result ``(spec, batch)``."""
        flat = A.reshape(A.shape[0], A.shape[1], -1)
        if self.norm == math.inf:
            lower, upper = box
            center = ((upper + lower) / 2).reshape(x.shape[0], -1)
            radius = ((upper - lower) / 2).reshape(x.shape[0], -1)
            return torch.einsum("sbn,bn->sb", flat, center) + sign * torch.einsum(
                "sbn,bn->sb", flat.abs(), radius
            )
        eps = self._eps_like(x, per_sample=True)
        dev = flat.abs().amax(-1) if self.dual_norm == math.inf else flat.norm(p=self.dual_norm, dim=-1)
        return torch.einsum("sbn,bn->sb", flat, x.reshape(x.shape[0], -1)) + sign * dev * eps

    def concretize_forward(self, x: Tensor, box: tuple[Tensor, Tensor], w: Tensor, sign: float) -> Tensor:
        """Same for forward-mode weights ``w`` of shape ``(batch, n_in, *shape)`` -> ``(batch, *shape)``."""
        A = w.movedim(1, -1).unsqueeze(0)  # (1, batch, *shape, n_in)
        shape = A.shape[2:-1]
        flat = A.reshape(1, A.shape[1], -1, A.shape[-1]).squeeze(0)  # (batch, m, n_in)
        if self.norm == math.inf:
            lower, upper = box
            center = ((upper + lower) / 2).reshape(x.shape[0], -1)
            radius = ((upper - lower) / 2).reshape(x.shape[0], -1)
            out = torch.einsum("bmn,bn->bm", flat, center) + sign * torch.einsum(
                "bmn,bn->bm", flat.abs(), radius
            )
        else:
            eps = self._eps_like(x, per_sample=True)
            dev = flat.abs().amax(-1) if self.dual_norm == math.inf else flat.norm(p=self.dual_norm, dim=-1)
            out = torch.einsum("bmn,bn->bm", flat, x.reshape(x.shape[0], -1)) + sign * dev * eps.unsqueeze(1)
        return out.reshape(x.shape[0], *shape)
