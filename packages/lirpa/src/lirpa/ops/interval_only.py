"""Modules that bring their own interval rule: any module with ``interval_forward(box) -> Interval``
(e.g. the ℓ∞-distance layers of ``linfdist``), used as an IBP-only leaf. Duck-typed: lirpa imports
no other paper package."""

from __future__ import annotations

from certcore.bounds import Interval
from lirpa.ops.base import Op


class IntervalOnly(Op):
    kind = "interval_only"
    ibp_intermediate = True

    def ibp(self, boxes):
        out = self.module.interval_forward(boxes[0])
        if isinstance(out, Interval):
            return out
        lower, upper = out
        return Interval(lower, upper, check=False)

    def _no_linear_rule(self):
        return self.unsupported(
            f"{type(self.module).__name__} has only an IBP rule (interval_forward); use method='IBP'"
        )

    def backward(self, lA, uA, boxes):
        raise self._no_linear_rule()

    def forward(self, xs, boxes):
        raise self._no_linear_rule()
