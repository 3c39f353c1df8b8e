"""The v2 per-iteration schedule of p, ε, λ and the learning rate, from the five-number epoch spec.

``EpochSpec(eps_start, eps_end, p_start, p_end, total)`` (the ``--epochs e0,e1,e2,e3,T`` of the
scripts). With ``t = epoch + batch / iters_per_epoch`` and ``ratio(a, b) = clamp((t − a)/(b − a), 0, 1)``
(1 when ``b ≤ a``):

- ``p = p_start · (p_end/p_start)^ratio(e2, e3)``, and ``p = ∞`` once ``ratio(e2, e3) ≥ 1`` if
  ``p_end ≥ 100``. "0,0,100,1250,1300" gives p = 8 until epoch 100, 995.8 at 1249, ∞ from 1250;
- ``ε = eps_train · ratio(e0, e1)``;
- ``λ = lam_start · (lam_end/lam_start)^ratio(e2, e3)`` (the mixture loss weight);
- ``lr = lr0 · ½(1 + cos(π · ratio(0, T)))`` for every parameter group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from certcore.schedules import ratio

__all__ = ["EpochSpec", "RecipeSchedule", "ScheduleState", "P_INF_THRESHOLD"]

P_INF_THRESHOLD = 100.0  # p_end at or above this switches to p = inf at the end of the ramp


@dataclass(frozen=True)
class EpochSpec:
    eps_start: int
    eps_end: int
    p_start: int
    p_end: int
    total: int

    def __post_init__(self) -> None:
        e = (self.eps_start, self.eps_end, self.p_start, self.p_end, self.total)
        if any(int(v) != v or v < 0 for v in e):
            raise ValueError(f"epoch spec entries must be non-negative integers; got {e}")
        if self.total < 1:
            raise ValueError(f"total epochs must be >= 1; got {self.total}")
        if self.eps_end < self.eps_start or self.p_end < self.p_start:
            raise ValueError(
                f"epoch spec {self.as_string()}: a ramp must not end before it starts "
                f"(eps {self.eps_start}->{self.eps_end}, p {self.p_start}->{self.p_end})"
            )
        if max(e[:4]) > self.total:
            raise ValueError(f"epoch spec {self.as_string()}: ramp epochs must be <= total ({self.total})")

    @classmethod
    def parse(cls, text: str) -> EpochSpec:
        """``"0,0,100,1250,1300"`` → ``EpochSpec(0, 0, 100, 1250, 1300)``."""
        parts = [s.strip() for s in text.split(",")]
        if len(parts) != 5:
            raise ValueError(
                f"expected five comma-separated epochs (eps_start,eps_end,p_start,p_end,total); got {text!r}"
            )
        return cls(*(int(s) for s in parts))

    def as_string(self) -> str:
        return f"{self.eps_start},{self.eps_end},{self.p_start},{self.p_end},{self.total}"


@dataclass(frozen=True)
class ScheduleState:
    p: float
    eps: float
    lam: float
    lr_factor: float


@dataclass(frozen=True)
class RecipeSchedule:
    epochs: EpochSpec
    eps_train: float
    p_start: float = 8.0
    p_end: float = 1000.0
    lam_start: float = 0.0
    lam_end: float = 0.0
    iters_per_epoch: int = 1

    def __post_init__(self) -> None:
        if not (self.eps_train >= 0 and math.isfinite(self.eps_train)):
            raise ValueError(f"eps_train must be finite and >= 0; got {self.eps_train}")
        if not (0 < self.p_start <= self.p_end):
            raise ValueError(
                "the p schedule must not decrease and must stay positive: "
                f"p_start={self.p_start}, p_end={self.p_end}"
            )
        if (self.lam_start > 0) != (self.lam_end > 0) or self.lam_start < 0 or self.lam_end < 0:
            raise ValueError(
                f"lam_start and lam_end must both be > 0 (or both 0); got {self.lam_start}, {self.lam_end}"
            )
        if self.iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be >= 1; got {self.iters_per_epoch}")

    def time(self, epoch: int, batch: int = 0) -> float:
        return epoch + batch / self.iters_per_epoch

    def p_at(self, epoch: int, batch: int = 0) -> float:
        r = ratio(self.time(epoch, batch), self.epochs.p_start, self.epochs.p_end)
        if r >= 1 and self.p_end >= P_INF_THRESHOLD:
            return math.inf
        return self.p_start * math.exp(math.log(self.p_end / self.p_start) * r)

    def eps_at(self, epoch: int, batch: int = 0) -> float:
        return self.eps_train * ratio(self.time(epoch, batch), self.epochs.eps_start, self.epochs.eps_end)

    def lam_at(self, epoch: int, batch: int = 0) -> float:
        if self.lam_start == 0:
            return 0.0
        r = ratio(self.time(epoch, batch), self.epochs.p_start, self.epochs.p_end)
        return self.lam_start * math.exp(math.log(self.lam_end / self.lam_start) * r)

    def lr_factor_at(self, epoch: int, batch: int = 0) -> float:
        r = ratio(self.time(epoch, batch), 0, self.epochs.total)
        return 0.5 * (1 + math.cos(math.pi * r))

    def at(self, epoch: int, batch: int = 0) -> ScheduleState:
        return ScheduleState(
            self.p_at(epoch, batch),
            self.eps_at(epoch, batch),
            self.lam_at(epoch, batch),
            self.lr_factor_at(epoch, batch),
        )
