"""Elementwise nonlinearities: ReLU, LeakyReLU, Sigmoid, Tanh, Exp, Log and Square (``x*x``, ``x**2``,
``torch.pow(x, 2)``, ``torch.square``).

IBP: the monotone ones map each end (``[f(l), f(u)]``); square is ``[0 or min(l², u²), max(l², u²)]``.
Backward and forward: the linear relaxation ``lw·x + lb <= f(x) <= uw·x + ub`` on the input's bounds
``[l, u]`` (:mod:`lirpa.relaxations`), then :func:`relaxation_backward` / :func:`relaxation_forward`.
ReLU and LeakyReLU take ``bound_opts["activation_bound_option"]`` (``"adaptive"`` by default).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds import Interval
from certcore.bounds.rules import interval_leaky_relu
from lirpa.ops.base import Op, relaxation_backward, relaxation_forward


class Activation(Op):
    nonlinear = True
    ibp_intermediate = True
    fn = None  # the elementwise function, for monotone IBP

    def __init__(self, node, inputs, module, where):
        super().__init__(node, inputs, module, where)
        self.options: dict = {}
        self.alpha: Tensor | None = None  # optimisable lower slopes (alpha-CROWN), (spec, batch, *shape)

    def ibp(self, boxes):
        (box,) = boxes
        return Interval(self.fn(box.lower), self.fn(box.upper), check=False)

    def relax(self, box: Interval, alpha: Tensor | None = None):
        raise NotImplementedError

    def relax_optimized(self, box: Interval):
        """The relaxation, with ``self.alpha`` (alpha-CROWN, when set) as the lower slope of unstable
        neurons, used as is (``clamp_alpha=False``): the optimiser projects it onto its range after
        each step, so its gradient also flows at the ends of the range."""
        if self.alpha is None or not self.relu_like:
            return self.relax(box)
        return self.relax(box, alpha=self.alpha)

    def backward(self, lA, uA, boxes):
        r = self.relax_optimized(boxes[0])
        lA_x, uA_x, lbias, ubias = relaxation_backward(lA, uA, r.lw, r.lb, r.uw, r.ub)
        return [(lA_x, uA_x)], lbias, ubias

    def forward(self, xs, boxes):
        r = self.relax(boxes[0])
        return relaxation_forward(xs[0], r.lw, r.lb, r.uw, r.ub)


def _relaxations():
    from lirpa import relaxations  # imported lazily: relaxations imports nothing from the engine

    return relaxations


class ReLU(Activation):
    kind = "relu"
    relu_like = True
    fn = staticmethod(F.relu)

    def relax(self, box, alpha=None):
        option = self.options.get("activation_bound_option", "adaptive")
        return _relaxations().relax_relu(
            box.lower, box.upper, option=option, alpha=alpha, check=False, clamp_alpha=False
        )


class LeakyReLU(Activation):
    kind = "leaky_relu"
    relu_like = True

    def bind(self, env):
        super().bind(env)
        if isinstance(self.module, nn.LeakyReLU):
            self.slope = float(self.module.negative_slope)
        else:
            args = self.arg(env, self.node.args)
            kw = self.arg(env, self.node.kwargs)
            self.slope = float(args[1] if len(args) > 1 else kw.get("negative_slope", 0.01))

    def ibp(self, boxes):
        return interval_leaky_relu(boxes[0], self.slope)

    def relax(self, box, alpha=None):
        option = self.options.get("activation_bound_option", "adaptive")
        return _relaxations().relax_leaky_relu(
            box.lower, box.upper, self.slope, option=option, alpha=alpha, check=False, clamp_alpha=False
        )


class Sigmoid(Activation):
    kind = "sigmoid"
    fn = staticmethod(torch.sigmoid)

    def relax(self, box):
        return _relaxations().relax_sigmoid(box.lower, box.upper, check=False)


class Tanh(Activation):
    kind = "tanh"
    fn = staticmethod(torch.tanh)

    def relax(self, box):
        return _relaxations().relax_tanh(box.lower, box.upper, check=False)


class Exp(Activation):
    kind = "exp"
    fn = staticmethod(torch.exp)

    def relax(self, box):
        return _relaxations().relax_exp(box.lower, box.upper, check=False)


class Log(Activation):
    kind = "log"
    fn = staticmethod(torch.log)

    def ibp(self, boxes):
        (box,) = boxes
        lower = torch.where(box.lower > 0, torch.log(box.lower.clamp(min=1e-300)), -torch.inf)
        upper = torch.where(box.upper > 0, torch.log(box.upper.clamp(min=1e-300)), -torch.inf)
        return Interval(lower, upper, check=False)

    def relax(self, box):
        if bool((box.lower <= 0).any()):
            raise ValueError(
                f"log at {self.where} (node {self.node.name!r}) needs strictly positive input bounds for a "
                f"linear relaxation; the smallest lower bound is {float(box.lower.min()):g}"
            )
        return _relaxations().relax_log(box.lower, box.upper, check=False)


class Square(Activation):
    """``x*x`` / ``x**2`` / ``torch.pow(x, 2)`` / ``torch.square(x)``: convex, so the upper line is the
    chord and the lower one a tangent (exact at both ends of ``[l, u]`` for the upper bound)."""

    kind = "square"
    ibp_intermediate = True

    def ibp(self, boxes):
        (box,) = boxes
        lo, hi = box.lower, box.upper
        upper = torch.maximum(lo * lo, hi * hi)
        nearest = torch.where(lo >= 0, lo, torch.clamp(hi, max=0))  # the point of [l, u] nearest 0
        return Interval(nearest * nearest, upper, check=False)

    def relax(self, box):
        return _relaxations().relax_square(box.lower, box.upper, check=False)


class Reciprocal(Activation):
    """``1 / x`` and ``torch.reciprocal``: IBP ``[1/u, 1/l]`` when ``0 ∉ [l, u]`` (else unbounded);
    the linear relaxation needs input bounds of one sign."""

    kind = "reciprocal"

    def ibp(self, boxes):
        (box,) = boxes
        lo, hi = box.lower, box.upper
        ok = (lo > 0) | (hi < 0)
        one = torch.ones_like(lo)
        lower = torch.where(ok, 1.0 / torch.where(ok, hi, one), -torch.inf)
        upper = torch.where(ok, 1.0 / torch.where(ok, lo, one), torch.inf)
        return Interval(lower, upper, check=False)

    def relax(self, box):
        if bool(((box.lower <= 0) & (box.upper >= 0)).any()):
            raise ValueError(
                f"reciprocal at {self.where} (node {self.node.name!r}): an input interval contains 0, so 1/x "
                "has no linear bounds there"
            )
        return _relaxations().relax_reciprocal(box.lower, box.upper, check=False)


RECIPROCAL_FUNCTIONS = (torch.reciprocal, "reciprocal")
SQUARE_FUNCTIONS = (torch.square, "square")
POW_TARGETS = (operator.pow, torch.pow, "pow", operator.ipow)
