"""α-CROWN (``method="alpha-CROWN"`` = ``"CROWN-Optimized"``): CROWN with optimised ReLU lower slopes.

Intermediate bounds are computed once by CROWN and kept fixed (``fix_interm_bounds``). Every ReLU /
LeakyReLU on the way to the final node gets one lower slope ``α`` per (spec row, sample, neuron),
initialised to the slope CROWN used (``init_alpha``), and only used where the neuron is unstable. The
final bound ``C·f`` is a function of ``α``; Adam (``lr_alpha``, default 0.5, ``ExponentialLR`` decay
``lr_decay`` 0.98) ascends the sum of the lower bounds (or descends the sum of the upper bounds) for
``iteration`` steps (20), projecting ``α`` onto ``[negative_slope, 1]`` after each step. Lower and upper
bounds are two separate runs, the upper one first (auto_LiRPA's order). ``keep_best`` keeps, for every
(sample, spec) entry, the best bound seen, the CROWN bound of the first iteration included, so the result
is never looser than CROWN; the run stops early after ``early_stop_patience`` (10) iterations without
improvement of the summed objective.

The optimisation always runs with autograd enabled (also under ``torch.no_grad()``), computes gradients
only for ``α`` (``torch.autograd.grad``; the model's ``.grad`` fields are not touched) and returns detached
bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["optimize_final_bound"]


def _run(bm, final, A0: Tensor, relus: list, lower: bool, args: dict) -> Tensor:
    from lirpa import relaxations

    spec = A0.shape[0]
    alphas, ranges = [], []
    for r in relus:
        box = bm._bounds[r.inputs[0]]
        r.op.alpha = None
        init = r.op.relax(box).lw.detach()
        alpha = init.unsqueeze(0).expand(spec, *init.shape).clone().requires_grad_(True)
        slope = getattr(r.op, "slope", None)
        lo, hi = relaxations.alpha_bounds(
            r.op.kind, **({"negative_slope": slope} if slope is not None else {})
        )
        alphas.append(alpha)
        ranges.append((lo, hi))
        r.op.alpha = alpha
    opt = torch.optim.Adam(alphas, lr=float(args["lr_alpha"]))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, float(args["lr_decay"]))
    best = best_total = None
    stale = 0
    for _ in range(int(args["iteration"])):
        lb, ub = bm._backward(final, A0, lower, not lower)
        bound = lb if lower else ub
        value = bound.detach()
        total = float(value.sum()) if lower else -float(value.sum())
        if best is None:
            best = value.clone()
        elif args.get("keep_best", True):
            best = torch.maximum(best, value) if lower else torch.minimum(best, value)
        else:
            best = value.clone()
        if best_total is None or total > best_total:
            best_total, stale = total, 0
        else:
            stale += 1
            if stale >= int(args["early_stop_patience"]):
                break
        loss = -bound.sum() if lower else bound.sum()
        grads = torch.autograd.grad(loss, alphas, allow_unused=True)
        opt.zero_grad()
        for a, g in zip(alphas, grads, strict=True):
            a.grad = None if g is None else g.detach()
        opt.step()
        sched.step()
        with torch.no_grad():
            for a, (lo, hi) in zip(alphas, ranges, strict=True):
                a.clamp_(min=lo, max=hi)
    for r in relus:
        r.op.alpha = None
    return best


def optimize_final_bound(bm, final, A0: Tensor, bound_lower: bool, bound_upper: bool):
    """``(lb, ub)`` of ``A0·final`` (each ``(spec, batch)`` or None) by α-CROWN; intermediate bounds must
    already be in ``bm._bounds``."""
    args = bm.bound_opts["optimize_bound_args"]
    relus = [n for n in bm._ancestors(final) if n.op is not None and n.op.relu_like and n is not final]
    for name in list(bm._bounds):
        box = bm._bounds[name]
        bm._bounds[name] = type(box)(box.lower.detach(), box.upper.detach(), check=False)
    A0 = A0.detach()
    if not relus:  # nothing to optimise: the CROWN bound
        with torch.no_grad():
            return bm._backward(final, A0, bound_lower, bound_upper)
    lb = ub = None
    with torch.enable_grad():
        if bound_upper:
            ub = _run(bm, final, A0, relus, lower=False, args=args)
        if bound_lower:
            lb = _run(bm, final, A0, relus, lower=True, args=args)
    return lb, ub
