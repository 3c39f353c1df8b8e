"""Loss fusion (auto_LiRPA's ``CrossEntropyWrapper``, lirpa.md §5): bound the cross-entropy directly.

    >>> wrapped = CrossEntropyWrapper(model)                 # forward(x, labels) = Σ_j exp(z_j - z_label)
    >>> bm = BoundedModule(wrapped, (x, labels), bound_opts={"loss_fusion": True})
    >>> loss = fused_robust_loss(bm, BoundedTensor(x, ptb), labels, method="IBP")   # mean(log ub + m)

``CE(z, y) = log Σ_j exp(z_j - z_y)``, so an upper bound ``ub`` of the wrapper's output over the
perturbation gives ``log ub >= max CE``: the *robust loss* upper-bounds the worst-case cross-entropy.
Under ``loss_fusion`` the exp node bounds ``exp(x - m)`` with ``m`` the per-sample max of its input's
upper bounds (``max_input``), so ``ub`` is shifted: the loss is ``mean(log ub + m)``.

**Fused vs unfused IBP.** The unfused robust loss is ``CE(-[0, lb], 0)`` with ``lb`` the C-merged IBP
lower bounds of the 9 margins ``z_y - z_j``, i.e. ``log(1 + Σ_{j≠y} exp(-lb_j))``. The fused IBP bound
merges ``z - z_y`` into the final Linear the same way (so ``ub(z_j - z_y) = -lb_j`` exactly, and 0 for
``j = y``), IBP of ``exp`` is exact on an interval (monotone) and IBP of a sum adds the upper bounds:
both losses are the same number (up to rounding); tests/lirpa/test_loss_fusion.py checks it. With
CROWN-IBP the two differ (the fused bound relaxes ``exp`` linearly and optimises one bound of the sum;
neither dominates in general); both upper-bound the worst-case CE, which the tests check at sampled and
PGD points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CrossEntropyWrapper",
    "exp_max_input",
    "fused_robust_loss",
    "fused_upper_bound",
    "margin_robust_loss",
]


class CrossEntropyWrapper(nn.Module):
    """``forward(x, labels) = Σ_j exp(z_j - z_labels)`` per sample, ``z = model(x)`` (shape ``(B,)``); its log
    is the cross-entropy. ``labels`` (int64, ``(B,)``) is a constant for the bounds."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        z = self.model(x)
        margins = z - z.gather(1, labels.unsqueeze(1))
        return torch.exp(margins).sum(dim=1)


def _exp_ops(bm) -> list:
    from lirpa.ops.loss_fusion import FusibleExp

    return [n.op for n in bm._nodes if isinstance(n.op, FusibleExp)]


def exp_max_input(bm) -> Tensor:
    """The shift ``m`` (``(B,)``) the exp node of a loss-fusion ``BoundedModule`` used in its last bound."""
    ops = _exp_ops(bm)
    if len(ops) != 1:
        raise ValueError(f"loss fusion needs exactly one exp node in the graph, found {len(ops)}")
    m = ops[0].max_input
    if m is None:
        raise ValueError("no bound was computed yet with bound_opts={'loss_fusion': True}")
    return m.reshape(m.shape[0], -1)[:, 0]


def fused_upper_bound(bm, x: Tensor, labels: Tensor, method: str = "IBP") -> tuple[Tensor, Tensor]:
    """``(ub, m)``: the shifted upper bound of the wrapper's output and the shift, both ``(B,)``;
    ``ub · exp(m)`` bounds ``Σ_j exp(z_j - z_label)``."""
    if not bm.bound_opts.get("loss_fusion", False):
        raise ValueError("build the BoundedModule with bound_opts={'loss_fusion': True}")
    _, ub = bm.compute_bounds(x=(x, labels), method=method, bound_lower=False)
    return ub, exp_max_input(bm)


def fused_robust_loss(
    bm, x: Tensor, labels: Tensor, method: str = "IBP", crown_factor: float = 1.0
) -> Tensor:
    """``mean(log ub + m)``: an upper bound of the mean worst-case cross-entropy over the perturbation.

    ``method``: ``"IBP"`` or ``"CROWN-IBP"``; for CROWN-IBP the upper bound is mixed as in auto_LiRPA,
    ``ub = crown_ub·f + ibp_ub·(1 - f)`` with ``f = crown_factor`` (both bounds share the shift ``m``)."""
    mode = method.strip().lower()
    if mode == "ibp" or (mode == "crown-ibp" and crown_factor <= 0.0):
        ub, m = fused_upper_bound(bm, x, labels, "IBP")
    elif mode == "crown-ibp":
        iub, m = fused_upper_bound(bm, x, labels, "IBP")
        cub, m2 = fused_upper_bound(bm, x, labels, "CROWN-IBP")
        if not torch.equal(m, m2):  # pragma: no cover - both come from the same IBP intervals
            raise RuntimeError("IBP and CROWN-IBP used different exp shifts")
        ub = cub * crown_factor + iub * (1.0 - crown_factor) if crown_factor < 1.0 else cub
    else:
        raise ValueError(f"loss fusion supports method 'IBP' or 'CROWN-IBP', got {method!r}")
    tiny = torch.finfo(ub.dtype).tiny
    return (torch.log(ub.clamp(min=tiny)) + m).mean()


def margin_robust_loss(lb: Tensor) -> Tensor:
    """The unfused robust loss ``CE(-[0, lb], 0)`` of margin lower bounds ``lb`` (``(B, n_classes - 1)``)."""
    logits = torch.cat([torch.zeros_like(lb[:, :1]), -lb], dim=1)
    return F.cross_entropy(logits, torch.zeros(lb.shape[0], dtype=torch.long, device=lb.device))
