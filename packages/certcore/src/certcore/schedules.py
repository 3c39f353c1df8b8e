"""Value schedules for ε, p, λ and the learning rate: small frozen dataclasses, ``sched(t) -> float``.

``t`` is a fractional epoch, ``epoch + batch / batches_per_epoch`` (0-based; see :func:`epoch_time`), or
a step count: a schedule only compares ``t`` with its own ``start`` and ``end``. Every schedule here is
monotone from ``sched.initial`` (for ``t <= start``) to ``sched.final`` (for ``t >= end``), which is what
:func:`require_nonnegative` and :func:`require_nondecreasing` check.

Ramps with ``end == start`` are a step: ``initial`` before ``start``, ``final`` from ``start`` on.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

__all__ = [
    "Constant",
    "Cosine",
    "GeometricRamp",
    "LinearRamp",
    "Schedule",
    "SmoothedRamp",
    "epoch_time",
    "ratio",
    "require_nondecreasing",
    "require_nonnegative",
]


def ratio(t: float, a: float, b: float) -> float:
    """ℓ∞-dist v2's ``ratio``: ``clamp((t - a) / (b - a), 0, 1)``, and 1 whenever ``b <= a``.

    linfdist.md §1d: evaluated every iteration with ``t = epoch + i / iters_per_epoch``.
    """
    _check_finite(t=t, a=a, b=b)
    if b <= a:
        return 1.0
    return min(max((t - a) / (b - a), 0.0), 1.0)


def epoch_time(epoch: int, batch: int, batches_per_epoch: int) -> float:
    """Fractional epoch of batch ``batch`` (0-based) in epoch ``epoch`` (0-based): ``epoch + batch / n``."""
    if batches_per_epoch <= 0:
        raise ValueError(f"batches_per_epoch must be positive, got {batches_per_epoch}")
    if not 0 <= batch < batches_per_epoch:
        raise ValueError(f"batch must lie in [0, {batches_per_epoch}), got {batch}")
    return epoch + batch / batches_per_epoch


def _check_finite(**values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")


def _progress(t: float, start: float, end: float) -> float:
    """Fraction of the ramp done at ``t``; a step at ``start`` when ``end == start``."""
    if end == start:
        return 1.0 if t >= start else 0.0
    return min(max((t - start) / (end - start), 0.0), 1.0)


class Schedule(ABC):
    """A monotone value schedule from :attr:`initial` to :attr:`final`."""

    def __post_init__(self) -> None:
        _check_finite(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __call__(self, t: float) -> float:
        _check_finite(t=t)
        return self._value(t)

    @abstractmethod
    def _value(self, t: float) -> float: ...

    @property
    @abstractmethod
    def initial(self) -> float:
        """The value at and before the start of the schedule."""

    @property
    @abstractmethod
    def final(self) -> float:
        """The value at and after the end of the schedule."""


class _Ramp(Schedule):
    """Shared checks of the ramps: ``start <= end``."""

    start_value: float
    end_value: float
    start: float
    end: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.end < self.start:
            raise ValueError(f"{type(self).__name__}: end ({self.end}) must not precede start ({self.start})")

    @property
    def initial(self) -> float:
        return self.start_value

    @property
    def final(self) -> float:
        return self.end_value


@dataclass(frozen=True)
class Constant(Schedule):
    """The same value at every ``t``."""

    value: float

    def _value(self, t: float) -> float:
        return self.value

    @property
    def initial(self) -> float:
        return self.value

    @property
    def final(self) -> float:
        return self.value


@dataclass(frozen=True)
class LinearRamp(_Ramp):
    """``v0 + (v1 - v0) * r`` with ``r = clamp((t - start) / (end - start), 0, 1)``.

    auto_LiRPA's ``LinearScheduler`` with ``start=S,length=L`` (1-based epochs, ε per batch) is
    ``LinearRamp(0, eps, S - 1, S - 1 + L)`` at ``t = epoch_time(e - 1, batch, n)`` (fastibp.md §1.6).
    """

    start_value: float
    end_value: float
    start: float
    end: float

    def _value(self, t: float) -> float:
        return self.start_value + (self.end_value - self.start_value) * _progress(t, self.start, self.end)


@dataclass(frozen=True)
class GeometricRamp(_Ramp):
    """``v0 * (v1 / v0) ** r``, ``r`` as in :class:`LinearRamp`; both values must be positive.

    ℓ∞-dist v2's p schedule (linfdist.md §1d): ``p = 8 * (1000 / 8) ** ratio(e2, e3)``, i.e.
    ``GeometricRamp(8, 1000, 100, 1250)`` for ``--epochs 0,0,100,1250,1300``.
    """

    start_value: float
    end_value: float
    start: float
    end: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start_value <= 0 or self.end_value <= 0:
            raise ValueError(
                f"GeometricRamp needs positive values, got start_value={self.start_value}, "
                f"end_value={self.end_value}"
            )

    def _value(self, t: float) -> float:
        r = _progress(t, self.start, self.end)
        if r == 1.0:
            return self.end_value
        return self.start_value * (self.end_value / self.start_value) ** r


@dataclass(frozen=True)
class SmoothedRamp(_Ramp):
    """The IBP literature's smoothed ramp: polynomial growth, then linear (fastibp.md §1.6, lirpa.md §6.1).

    With ``x = clamp((t - start) / (end - start), 0, 1)``, ``m = mid`` and ``β = beta``::

        s(x) = a · x^β                        for x <= m
        s(x) = a · m^β + a·β·m^(β-1) · (x - m)   for x >  m,   a = 1 / (m^(β-1) · (m + β·(1 - m)))

    and the value is ``v0 + (v1 - v0) · s(x)``. ``a`` makes ``s`` and its slope continuous at ``m`` and
    ``s(1) = 1``. This is DeepMind IBP's schedule as auto_LiRPA's ``SmoothedScheduler`` implements it
    (``alpha = ε / ((final-mid)·β·t + (mid-init)·t)``, ``t = (mid-init)^(β-1)``), whose 1-based
    ``start=S,length=L`` maps to ``start = S - 1``, ``end = S - 1 + L`` at
    ``t = epoch_time(e - 1, batch, n)``. auto_LiRPA rounds its mid point down to a whole batch,
    ``int(L·n·mid)``; where ``L·n·mid`` is an integer the two agree exactly.
    """

    start_value: float
    end_value: float
    start: float
    end: float
    mid: float = 0.25
    beta: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mid < 1.0:
            raise ValueError(f"SmoothedRamp: mid must lie in (0, 1), got {self.mid}")
        if self.beta < 1.0:
            raise ValueError(
                f"SmoothedRamp: beta must be >= 1 (else the ramp is not smooth), got {self.beta}"
            )

    def shape(self, x: float) -> float:
        """The normalised ramp ``s(x)`` on ``[0, 1]``, ``s(0) = 0``, ``s(1) = 1``."""
        if x >= 1.0:
            return 1.0
        m, beta = self.mid, self.beta
        a = 1.0 / (m ** (beta - 1.0) * (m + beta * (1.0 - m)))
        if x <= m:
            return a * x**beta
        return min(a * m**beta + a * beta * m ** (beta - 1.0) * (x - m), 1.0)

    def _value(self, t: float) -> float:
        s = self.shape(_progress(t, self.start, self.end))
        return self.start_value + (self.end_value - self.start_value) * s


@dataclass(frozen=True)
class Cosine(_Ramp):
    """Cosine annealing: ``v1 + (v0 - v1) · (1 + cos(π·r)) / 2``, ``r`` as in :class:`LinearRamp`.

    ℓ∞-dist v2's learning rate (linfdist.md §1d) is ``Cosine(lr0, 0, 0, T)`` evaluated per iteration.
    """

    start_value: float
    end_value: float
    start: float
    end: float

    def _value(self, t: float) -> float:
        r = _progress(t, self.start, self.end)
        return self.end_value + (self.start_value - self.end_value) * 0.5 * (1.0 + math.cos(math.pi * r))


def require_nonnegative(schedule: Schedule, what: str = "value") -> Schedule:
    """Return ``schedule`` if it never goes below 0 (e.g. an ε schedule), else raise ``ValueError``."""
    lowest = min(schedule.initial, schedule.final)
    if lowest < 0:
        raise ValueError(f"the {what} schedule {schedule!r} reaches {lowest}; {what} must be >= 0")
    return schedule


def require_nondecreasing(schedule: Schedule, what: str = "value") -> Schedule:
    """Return ``schedule`` if it never decreases (e.g. a p schedule), else raise ``ValueError``."""
    if schedule.final < schedule.initial:
        raise ValueError(
            f"the {what} schedule {schedule!r} decreases from {schedule.initial} to {schedule.final}; "
            f"a nondecreasing {what} schedule is required"
        )
    return schedule
