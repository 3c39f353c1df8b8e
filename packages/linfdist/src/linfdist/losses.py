"""The losses of the v2 code, as typed configs.

Each takes ``(logits, worst, targets, lam)``: ``logits`` the (scaled) clean logits, ``worst`` the
model's worst-case margins (``MLPModel``: ``(z_j − z_y)/(2ε) + 1`` in training; ``HybridModel``: the
IBP upper bound of ``z_j − z_y``), ``lam`` the scheduled mixture weight (ignored by the others).

- ``MixtureLoss`` (v2 paper): ``mean_b max_j clip(worst_j, 0, clip) + λ · CE(logits, y)``.
- ``HingeLoss`` (v1 baseline): ``(1 − mix) · mean max_j relu(worst_j) + mix · mean_j relu(worst_j)``.
- ``CrossEntropyLoss`` (v1 hybrid): ``(1 − mix) · CE(worst, y) + mix · CE(logits, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

__all__ = ["MixtureLoss", "HingeLoss", "CrossEntropyLoss", "LossConfig"]


@dataclass(frozen=True)
class MixtureLoss:
    lam_start: float = 0.1
    lam_end: float = 0.001
    clip: float = 1.0
    kind: Literal["mixture"] = "mixture"

    def __post_init__(self) -> None:
        if not (self.lam_start > 0 and self.lam_end > 0 and self.clip > 0):
            raise ValueError(f"MixtureLoss needs lam_start, lam_end, clip > 0; got {self}")

    def __call__(self, logits: Tensor, worst: Tensor, targets: Tensor, lam: float) -> Tensor:
        hinge = worst.clamp(min=0, max=self.clip).max(dim=1).values.mean()
        return hinge + lam * F.cross_entropy(logits, targets)


@dataclass(frozen=True)
class HingeLoss:
    mix: float = 0.25
    kind: Literal["hinge"] = "hinge"

    def __call__(self, logits: Tensor, worst: Tensor, targets: Tensor, lam: float = 0.0) -> Tensor:
        res = worst.clamp(min=0)
        return (1 - self.mix) * res.max(dim=1).values.mean() + self.mix * res.mean()


@dataclass(frozen=True)
class CrossEntropyLoss:
    mix: float = 0.0
    kind: Literal["crossentropy"] = "crossentropy"

    def __call__(self, logits: Tensor, worst: Tensor, targets: Tensor, lam: float = 0.0) -> Tensor:
        return (1 - self.mix) * F.cross_entropy(worst, targets) + self.mix * F.cross_entropy(logits, targets)


LossConfig = MixtureLoss | HingeLoss | CrossEntropyLoss
