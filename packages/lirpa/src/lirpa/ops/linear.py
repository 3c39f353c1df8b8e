"""Affine maps with constant weights: ``nn.Linear``, ``F.linear``, ``x @ M`` (M a constant matrix) and
``nn.Conv2d``/``F.conv2d``.

Backward rule of ``y = W x + b``: ``A_x = A W`` and bias ``A·b`` (summed over the node dimensions), for
the lower and the upper coefficients alike. Convolution: ``A_x = conv_transpose2d(A, W)`` with the
``output_padding`` that restores the input size, bias ``Σ_{c,h,w} A[c,h,w] b[c]``.
Forward rule: ``lw_y = W⁺ lw_x + W⁻ uw_x``, ``lb_y = W⁺ lb_x + W⁻ ub_x + b`` (and symmetrically).
IBP: centre ``W c + b``, radius ``|W| r`` (exactly ``certcore.bounds.interval_linear``); with an ℓp input
(``lp`` given) the first affine map is bounded by the dual norm, ``W x₀ + b ± ε‖W_i‖_q``.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds import Interval
from lirpa.ops.base import LinearBound, Op, node_sum


def _dual(q: float, w: Tensor, dims: tuple[int, ...]) -> Tensor:
    return w.abs().amax(dim=dims) if q == float("inf") else w.norm(p=q, dim=dims)


class Linear(Op):
    """``y = x Wᵀ + b`` on the last dimension of ``x``."""

    kind = "linear"

    def bind(self, env):
        super().bind(env)
        node, m = self.node, self.module
        if isinstance(m, nn.Linear):
            self.weight, self.bias = m.weight, m.bias
        elif node.target is F.linear:
            args = self.arg(env, node.args)
            kw = self.arg(env, node.kwargs)
            self.weight = args[1] if len(args) > 1 else kw["weight"]
            self.bias = args[2] if len(args) > 2 else kw.get("bias")
        else:  # x @ M, torch.matmul(x, M), x.matmul(M)
            mat = self.arg(env, node.args[1])
            if not isinstance(mat, Tensor) or mat.dim() != 2:
                raise self.unsupported("matmul needs a constant 2-D right operand (a parameter or buffer)")
            self.weight, self.bias = mat.t(), None

    def ibp(self, boxes, lp=None):
        (box,) = boxes
        if lp is not None:
            x0, eps, q = lp
            center = F.linear(x0, self.weight, self.bias)
            radius = _dual(q, self.weight, (1,)) * eps.reshape(-1, *([1] * (center.dim() - 1)))
            return Interval(center - radius, center + radius, check=False)
        center = F.linear(box.center, self.weight, self.bias)
        radius = F.linear(box.radius, self.weight.abs())
        return Interval(center - radius, center + radius, check=False)

    def backward(self, lA, uA, boxes):
        w, b = self.weight, self.bias
        out = []
        biases = []
        for A in (lA, uA):
            if A is None:
                out.append(None)
                biases.append(0.0)
            else:
                out.append(A.matmul(w))
                biases.append(node_sum(A.matmul(b).unsqueeze(-1)) if b is not None else 0.0)
        return [(out[0], out[1])], biases[0], biases[1]

    def forward(self, xs, boxes):
        (x,) = xs
        w_pos, w_neg = self.weight.clamp(min=0), self.weight.clamp(max=0)
        lw = x.lw.matmul(w_pos.t()) + x.uw.matmul(w_neg.t())
        uw = x.uw.matmul(w_pos.t()) + x.lw.matmul(w_neg.t())
        lb = F.linear(x.lb, w_pos, self.bias) + F.linear(x.ub, w_neg)
        ub = F.linear(x.ub, w_pos, self.bias) + F.linear(x.lb, w_neg)
        return LinearBound(lw, lb, uw, ub)

    def merged_ibp(self, box: Interval, C: Tensor) -> Interval:
        """IBP of ``C·y`` with ``C`` merged into this layer (``W' = C W``, ``b' = C b``), as
        ``certcore.bounds.ibp_margin_lower`` does it."""
        w = torch.matmul(C, self.weight)
        center = torch.einsum("bsi,bi->bs", w, box.center)
        if self.bias is not None:
            center = center + torch.matmul(C, self.bias)
        radius = torch.einsum("bsi,bi->bs", w.abs(), box.radius)
        return Interval(center - radius, center + radius, check=False)

    def merged_forward(self, x: LinearBound, C: Tensor) -> LinearBound:
        """Forward bounds of ``C·y`` with ``C`` merged into this layer (``W' = C W`` per sample)."""
        w = torch.matmul(C, self.weight)  # (B, S, in)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        b = torch.matmul(C, self.bias) if self.bias is not None else 0.0
        lw = torch.einsum("bsi,bni->bns", wp, x.lw) + torch.einsum("bsi,bni->bns", wn, x.uw)
        uw = torch.einsum("bsi,bni->bns", wp, x.uw) + torch.einsum("bsi,bni->bns", wn, x.lw)
        lb = torch.einsum("bsi,bi->bs", wp, x.lb) + torch.einsum("bsi,bi->bs", wn, x.ub) + b
        ub = torch.einsum("bsi,bi->bs", wp, x.ub) + torch.einsum("bsi,bi->bs", wn, x.lb) + b
        return LinearBound(lw, lb, uw, ub)


MATMUL_TARGETS = (operator.matmul, torch.matmul, "matmul")


class Conv2d(Op):
    """``nn.Conv2d`` (zero padding) or ``F.conv2d``: any stride, padding, dilation and groups."""

    kind = "conv2d"

    def bind(self, env):
        super().bind(env)
        m = self.module
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise self.unsupported(f"padding_mode={m.padding_mode!r} (only 'zeros' is supported)")
            self.weight, self.bias = m.weight, m.bias
            stride, padding, dilation, groups = m.stride, m.padding, m.dilation, m.groups
        else:
            args = list(self.arg(env, self.node.args))
            kw = self.arg(env, self.node.kwargs)
            names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
            defaults = [None, None, None, 1, 0, 1, 1]
            vals = {n: (args[i] if i < len(args) else kw.get(n, defaults[i])) for i, n in enumerate(names)}
            self.weight, self.bias = vals["weight"], vals["bias"]
            stride, padding, dilation, groups = (vals[k] for k in ("stride", "padding", "dilation", "groups"))
        if isinstance(padding, str):
            if padding != "valid":
                raise self.unsupported(f"padding={padding!r} (use explicit integer padding)")
            padding = 0
        pair = torch.nn.modules.utils._pair
        self.stride, self.padding, self.dilation, self.groups = (
            pair(stride),
            pair(padding),
            pair(dilation),
            groups,
        )

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def ibp(self, boxes, lp=None):
        (box,) = boxes
        if lp is not None:
            x0, eps, q = lp
            center = self._conv(x0, self.weight, self.bias)
            radius = _dual(q, self.weight, (1, 2, 3)).reshape(1, -1, 1, 1) * eps.reshape(-1, 1, 1, 1)
            return Interval(center - radius, center + radius, check=False)
        center = self._conv(box.center, self.weight, self.bias)
        radius = self._conv(box.radius, self.weight.abs(), None)
        return Interval(center - radius, center + radius, check=False)

    def _transpose(self, A: Tensor) -> Tensor:
        spec, batch = A.shape[:2]
        c_in, h_in, w_in = self.in_shapes[0]
        h_out, w_out = A.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        op_h = h_in - ((h_out - 1) * self.stride[0] - 2 * self.padding[0] + self.dilation[0] * (kh - 1) + 1)
        op_w = w_in - ((w_out - 1) * self.stride[1] - 2 * self.padding[1] + self.dilation[1] * (kw - 1) + 1)
        out = F.conv_transpose2d(
            A.reshape(spec * batch, *A.shape[2:]),
            self.weight,
            None,
            self.stride,
            self.padding,
            (op_h, op_w),
            self.groups,
            self.dilation,
        )
        return out.reshape(spec, batch, c_in, h_in, w_in)

    def backward(self, lA, uA, boxes):
        present = [A for A in (lA, uA) if A is not None]
        both = self._transpose(torch.cat(present)) if len(present) == 2 else self._transpose(present[0])
        split = both.split(present[0].shape[0]) if len(present) == 2 else (both,)
        it = iter(split)
        out = [None if A is None else next(it) for A in (lA, uA)]
        biases = [
            0.0 if A is None or self.bias is None else (A.sum((3, 4)) * self.bias).sum(-1) for A in (lA, uA)
        ]
        return [(out[0], out[1])], biases[0], biases[1]

    def forward(self, xs, boxes):
        (x,) = xs
        batch, n_in = x.lw.shape[:2]
        w_pos, w_neg = self.weight.clamp(min=0), self.weight.clamp(max=0)

        def conv_w(t: Tensor, w: Tensor) -> Tensor:
            y = self._conv(t.reshape(batch * n_in, *t.shape[2:]), w, None)
            return y.reshape(batch, n_in, *y.shape[1:])

        lw = conv_w(x.lw, w_pos) + conv_w(x.uw, w_neg)
        uw = conv_w(x.uw, w_pos) + conv_w(x.lw, w_neg)
        lb = self._conv(x.lb, w_pos, self.bias) + self._conv(x.ub, w_neg, None)
        ub = self._conv(x.ub, w_pos, self.bias) + self._conv(x.lb, w_neg, None)
        return LinearBound(lw, lb, uw, ub)
