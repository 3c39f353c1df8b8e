"""Elementwise affine maps with constants, and sums/differences of two perturbed nodes.

``ScaleShift`` is ``y = x · s + t`` (or ``y = x / d + t``) with constant ``s``/``d``/``t`` broadcastable to
``x`` without changing its shape: ``x * c``, ``x / c``, ``x + c``, ``x - c``, ``c - x``, ``-x``, and
BatchNorm in eval mode (``s = γ/√(σ²+ε)``, ``t = β - μ s``) or in train mode (the clean batch's own
mean and variance, treated as constants, as ``certcore.bounds`` and auto_LiRPA do).
Backward: ``A_x = A s``, bias ``Σ A t``. Forward: ``lw_y = s⁺ lw_x + s⁻ uw_x`` and so on.
IBP: centre ``c s + t``, radius ``r |s|``.

``Add``/``Sub`` of two perturbed nodes ``a ± b`` (same shape): backward passes ``A`` to ``a`` and ``±A``
to ``b``; IBP ``[l_a ± …]``; forward adds the linear bounds (``Sub`` pairs lower with upper).
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, nn

from certcore.bounds import Interval, batchnorm_affine
from lirpa.ops.base import LinearBound, Op, node_sum

ADD_TARGETS = (operator.add, torch.add, "add", operator.iadd)
SUB_TARGETS = (operator.sub, torch.sub, "sub", operator.isub, torch.subtract)
MUL_TARGETS = (operator.mul, torch.mul, "mul", operator.imul, torch.multiply)
DIV_TARGETS = (operator.truediv, torch.div, "div", operator.itruediv, torch.true_divide)
NEG_TARGETS = (operator.neg, torch.neg, "neg", torch.negative)


class ScaleShift(Op):
    """``y = x·s + t`` or ``y = x/d + t``; which argument is the perturbed one is found from the node."""

    kind = "scale_shift"

    def bind(self, env):
        super().bind(env)
        node, m = self.node, self.module
        self.scale = self.divisor = self.shift = None
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            self._bind_batchnorm(env, m)
        else:
            target = node.target
            args = [self.arg(env, a) for a in node.args]
            pos = next(i for i, a in enumerate(node.args) if getattr(a, "name", None) == self.inputs[0])
            other = args[1 - pos] if len(args) > 1 else None
            if node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("rounding_mode") is not None:
                raise self.unsupported("alpha / rounding_mode arguments are not supported")
            if target in MUL_TARGETS:
                self.scale = other
            elif target in DIV_TARGETS:
                if pos != 0:
                    raise self.unsupported("division by a perturbed value (reciprocal) is not supported yet")
                self.divisor = other
            elif target in ADD_TARGETS:
                self.shift = other
            elif target in SUB_TARGETS:
                if pos == 0:
                    self.shift = -other
                else:
                    self.scale, self.shift = -1.0, other
            elif target in NEG_TARGETS:
                self.scale = -1.0
            else:  # pragma: no cover - the registry only builds the targets above
                raise self.unsupported("not an elementwise affine map")
        like = env[self.inputs[0]]
        for name in ("scale", "divisor", "shift"):
            v = getattr(self, name)
            if v is None:
                continue
            t = torch.as_tensor(v, dtype=like.dtype, device=like.device)
            if torch.broadcast_shapes(t.shape, like.shape) != like.shape:
                raise self.unsupported(
                    f"a constant of shape {tuple(t.shape)} broadcasts the perturbed input of shape "
                    f"{tuple(like.shape)} to a larger shape"
                )
            setattr(self, name, t)

    def _bind_batchnorm(self, env, bn):
        x = env[self.inputs[0]]
        if bn.training or bn.running_mean is None:
            dims = [0, *range(2, x.dim())]
            mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        else:
            mean, var = bn.running_mean, bn.running_var
        scale, shift = batchnorm_affine(bn, mean, var)
        view = (1, bn.num_features) + (1,) * (x.dim() - 2)
        self.scale, self.shift = scale.reshape(view), shift.reshape(view)

    def _mul(self, x: Tensor) -> Tensor:
        if self.scale is not None:
            x = x * self.scale
        if self.divisor is not None:
            x = x / self.divisor
        return x

    def _abs_mul(self, x: Tensor) -> Tensor:
        if self.scale is not None:
            x = x * self.scale.abs()
        if self.divisor is not None:
            x = x / self.divisor.abs()
        return x

    def _factor(self) -> Tensor | None:
        if self.scale is None and self.divisor is None:
            return None
        f = self.scale if self.scale is not None else 1.0
        return f / self.divisor if self.divisor is not None else f

    def ibp(self, boxes):
        (box,) = boxes
        center = self._mul(box.center)
        if self.shift is not None:
            center = center + self.shift
        radius = self._abs_mul(box.radius)
        return Interval(center - radius, center + radius, check=False)

    def backward(self, lA, uA, boxes):
        f = self._factor()
        out, biases = [], []
        for A in (lA, uA):
            if A is None:
                out.append(None)
                biases.append(0.0)
                continue
            out.append(A if f is None else A * f)
            biases.append(node_sum(A * self.shift) if self.shift is not None else 0.0)
        return [(out[0], out[1])], biases[0], biases[1]

    def forward(self, xs, boxes):
        (x,) = xs
        f = self._factor()
        if f is None:
            f = torch.ones((), dtype=x.lb.dtype, device=x.lb.device)
        f = torch.as_tensor(f, dtype=x.lb.dtype, device=x.lb.device)
        pos, neg = f.clamp(min=0), f.clamp(max=0)
        full = pos.dim() == x.lb.dim()  # (1|batch, *shape): make room for the n_in dimension
        pos_w, neg_w = (pos.unsqueeze(1), neg.unsqueeze(1)) if full else (pos, neg)
        lw = pos_w * x.lw + neg_w * x.uw
        uw = pos_w * x.uw + neg_w * x.lw
        lb = pos * x.lb + neg * x.ub
        ub = pos * x.ub + neg * x.lb
        if self.shift is not None:
            lb, ub = lb + self.shift, ub + self.shift
        return LinearBound(lw, lb, uw, ub)


class AddSub(Op):
    """``a + b`` or ``a - b`` of two perturbed nodes of the same shape (a residual connection)."""

    kind = "add"

    def __init__(self, node, inputs, module, where, sign: float):
        super().__init__(node, inputs, module, where)
        self.sign = sign
        self.kind = "add" if sign > 0 else "sub"

    def bind(self, env):
        super().bind(env)
        if len(set(self.in_shapes)) != 1 or env[self.inputs[0]].shape != env[self.inputs[1]].shape:
            raise self.unsupported(
                f"operands of different shapes {[tuple(env[i].shape) for i in self.inputs]} (broadcasting "
                "two perturbed tensors is not supported)"
            )

    def ibp(self, boxes):
        a, b = boxes
        if self.sign > 0:
            return Interval(a.lower + b.lower, a.upper + b.upper, check=False)
        return Interval(a.lower - b.upper, a.upper - b.lower, check=False)

    def backward(self, lA, uA, boxes):
        neg = (lambda A: None if A is None else -A) if self.sign < 0 else (lambda A: A)
        return [(lA, uA), (neg(lA), neg(uA))], 0.0, 0.0

    def forward(self, xs, boxes):
        a, b = xs
        if self.sign > 0:
            return LinearBound(a.lw + b.lw, a.lb + b.lb, a.uw + b.uw, a.ub + b.ub)
        return LinearBound(a.lw - b.uw, a.lb - b.ub, a.uw - b.lw, a.ub - b.lb)
