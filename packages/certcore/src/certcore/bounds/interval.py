"""The ``Interval`` type: elementwise lower and upper bounds of a tensor.

    >>> box = Interval.from_eps(x, 8 / 255, data_min=0.0, data_max=1.0)   # clipped ℓ∞ box
    >>> box.center, box.radius
    >>> Interval.point(x)                                                 # a zero-width box

An ``Interval`` validates itself on construction (same shape, dtype and device, floating dtype, no NaN,
lower <= upper). The checks read tensor values, which synchronises with the GPU; code that builds
intervals it knows to be valid (the IBP rules) passes ``check=False``. Infinite bounds are allowed.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass

import torch
from torch import Tensor

from certcore.bounds._checks import as_eps, check_tensor, data_range, parse_norm

__all__ = ["Interval"]


@dataclass(frozen=True, eq=False)
class Interval:
    """Elementwise bounds ``lower <= x <= upper``. Differentiable: both ends may carry autograd graphs.

    ``check=False`` skips validation (for internal use where the bounds are valid by construction).
    """

    lower: Tensor
    upper: Tensor
    check: InitVar[bool] = True

    def __post_init__(self, check: bool) -> None:
        if not check:
            return
        for name, t in (("lower", self.lower), ("upper", self.upper)):
            if not isinstance(t, Tensor):
                raise TypeError(f"Interval.{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"Interval.{name} must have a floating dtype, got {t.dtype}")
        if self.lower.shape != self.upper.shape:
            raise ValueError(
                f"Interval bounds must have the same shape, got lower {tuple(self.lower.shape)} "
                f"and upper {tuple(self.upper.shape)}"
            )
        if self.lower.dtype != self.upper.dtype:
            raise TypeError(
                "Interval bounds must have the same dtype, "
                f"got lower {self.lower.dtype} and upper {self.upper.dtype}"
            )
        if self.lower.device != self.upper.device:
            raise ValueError(
                f"Interval bounds must be on the same device, got lower on {self.lower.device} "
                f"and upper on {self.upper.device}"
            )
        if self.lower.numel() == 0:
            return
        lo, hi = self.lower.detach(), self.upper.detach()
        if bool(torch.isnan(lo).any() | torch.isnan(hi).any()):
            raise ValueError(
                f"Interval bounds contain NaN ({int(torch.isnan(lo).sum())} in lower, "
                f"{int(torch.isnan(hi).sum())} in upper)"
            )
        bad = lo > hi
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            gap = float((lo - hi).max())
            raise ValueError(
                f"Interval requires lower <= upper, but lower > upper at {int(bad.sum())} entries "
                f"(first at index {idx}: lower={float(lo[idx]):g}, upper={float(hi[idx]):g}; "
                f"largest gap {gap:g})"
            )

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def point(cls, x: Tensor) -> Interval:
        """The zero-width interval ``[x, x]``. ``x`` must be a finite floating tensor."""
        check_tensor(x, "x")
        return cls(x, x, check=False)

    @classmethod
    def from_center_radius(cls, center: Tensor, radius: Tensor, *, check: bool = True) -> Interval:
        """``[center - radius, center + radius]``; ``radius`` must be >= 0."""
        return cls(center - radius, center + radius, check=check)

    @classmethod
    def from_eps(
        cls,
        x: Tensor,
        eps: float | Tensor,
        data_min: float | Tensor | None = None,
        data_max: float | Tensor | None = None,
        norm: object = "inf",
    ) -> Interval:
        """The box ``[x - eps, x + eps]`` intersected with ``[data_min, data_max]``.

        ``eps`` is a float or a tensor broadcastable to ``x`` (per sample ``(B, 1, ..., 1)`` or per
        feature, e.g. ``eps / std`` per channel for normalised inputs); it must be finite and >= 0.
        ``data_min``/``data_max`` are floats or broadcastable tensors in the same units as ``x``.

        ``norm="inf"`` gives the exact ℓ∞ ball. ``norm="2"`` gives its bounding box, which is the
        same box (every coordinate of an ℓ2 ball of radius eps moves by at most eps): a sound but
        loose enclosure, for IBP-style certifiers of ℓ2 balls.
        """
        parse_norm(norm)
        check_tensor(x, "x")
        eps_t = as_eps(eps, x)
        lo, hi, x = data_range(x, data_min, data_max)
        lower = x - eps_t
        upper = x + eps_t
        if lo is not None:
            lower = torch.maximum(lower, lo)
        if hi is not None:
            upper = torch.minimum(upper, hi)
        return cls(lower, upper, check=False)

    # --- views --------------------------------------------------------------------------------
    @property
    def center(self) -> Tensor:
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> Tensor:
        return (self.upper - self.lower) / 2

    @property
    def width(self) -> Tensor:
        return self.upper - self.lower

    @property
    def shape(self) -> torch.Size:
        return self.lower.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.lower.dtype

    @property
    def device(self) -> torch.device:
        return self.lower.device

    def __getitem__(self, index) -> Interval:
        return Interval(self.lower[index], self.upper[index], check=False)

    def __iter__(self):
        """``lower, upper = box`` unpacks the bounds."""
        return iter((self.lower, self.upper))

    def __repr__(self) -> str:
        return f"Interval(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"

    def detach(self) -> Interval:
        return Interval(self.lower.detach(), self.upper.detach(), check=False)

    def to(self, *args, **kwargs) -> Interval:
        return Interval(self.lower.to(*args, **kwargs), self.upper.to(*args, **kwargs), check=False)

    def reshape(self, *shape) -> Interval:
        return Interval(self.lower.reshape(*shape), self.upper.reshape(*shape), check=False)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Interval:
        return Interval(
            self.lower.flatten(start_dim, end_dim), self.upper.flatten(start_dim, end_dim), check=False
        )

    # --- set operations -----------------------------------------------------------------------
    def contains(self, x: Tensor, atol: float = 0.0) -> Tensor:
        """Elementwise ``lower - atol <= x <= upper + atol`` (a bool tensor)."""
        return (x >= self.lower - atol) & (x <= self.upper + atol)

    def clip(
        self, data_min: float | Tensor | None = None, data_max: float | Tensor | None = None
    ) -> Interval:
        """Intersect with ``[data_min, data_max]``; an empty intersection is an error."""
        lower, upper = self.lower, self.upper
        if data_min is not None:
            lower = torch.maximum(lower, torch.as_tensor(data_min, dtype=self.dtype, device=self.device))
        if data_max is not None:
            upper = torch.minimum(upper, torch.as_tensor(data_max, dtype=self.dtype, device=self.device))
        return Interval(lower, upper)

    def intersect(self, other: Interval) -> Interval:
        """The elementwise intersection; an empty intersection is an error."""
        return Interval(torch.maximum(self.lower, other.lower), torch.minimum(self.upper, other.upper))
