"""Bound rules for loss fusion (auto_LiRPA's ``CrossEntropyWrapper``): gather at a constant index, the
label margin ``z - z.gather(dim, idx)``, and ``exp`` with the max-shift.

``Gather`` is ``torch.gather(x, dim, idx)`` / ``x.gather(dim, idx)`` with a constant (unperturbed) ``idx``
along a non-batch dimension: a selection, so IBP is ``[gather(l), gather(u)]`` (exact), backward
scatters ``A`` back (``A_x = scatter_add(0, idx, A)``, exact), forward gathers the linear bounds.

``LabelMargin`` is ``a - g`` where ``g`` (size 1 along ``dim``) broadcasts into ``a``; when ``g`` is
``a.gather(dim, idx)`` of the same ``a``, the entry at ``idx`` is exactly 0 (``a_y - a_y``), which IBP
uses. With ``a`` the output of a final ``nn.Linear`` on a 2-D input, IBP merges the margin into the layer
(``W' = (I - 1·e_yᵀ) W``), as auto_LiRPA's ``_IBP_loss_fusion`` merges Linear+GatherElements+Sub, so the
fused IBP margins equal the C-merged IBP margins of the unfused loss. Backward: ``A_a = A``,
``A_g = -ΣA`` over the broadcast dimension (exact).

``FusibleExp`` is ``exp``; with ``bound_opts["loss_fusion"]`` it bounds ``exp(x - m)`` instead, ``m`` the
per-sample maximum of the upper bounds of ``x`` (detached; kept in ``max_input``, shape ``(B, 1, ...)``),
as auto_LiRPA's ``BoundExp`` does for numerical stability: the loss is then ``log(ub) + m``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from certcore.bounds import Interval
from lirpa.ops.activation import Exp
from lirpa.ops.base import LinearBound, Op

GATHER_TARGETS = (torch.gather, "gather")


class Gather(Op):
    kind = "gather"
    ibp_intermediate = True

    def bind(self, env):
        super().bind(env)
        node = self.node
        args = list(node.args)
        kwargs = dict(node.kwargs)
        if getattr(args[0] if args else kwargs.get("input"), "name", None) != self.inputs[0]:
            raise self.unsupported("only the gathered tensor (the first argument) may be perturbed")
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        index = self.arg(env, args[2] if len(args) > 2 else kwargs.get("index"))
        x = env[self.inputs[0]]
        if not isinstance(dim, int) or dim % x.dim() == 0:
            raise self.unsupported(f"gather must select along a non-batch dimension, got dim={dim!r}")
        if not isinstance(index, Tensor) or index.dim() != x.dim() or index.shape[0] != x.shape[0]:
            raise self.unsupported("the gather index must be a constant tensor with the batch dimension")
        if kwargs.get("sparse_grad"):
            raise self.unsupported("sparse_grad is not supported")
        self.dim = dim % x.dim()
        self.index = index

    def ibp(self, boxes):
        (box,) = boxes
        return Interval(box.lower.gather(self.dim, self.index), box.upper.gather(self.dim, self.index),
                        check=False)

    def _scatter(self, A: Tensor | None) -> Tensor | None:
        if A is None:
            return None
        spec, batch = A.shape[:2]
        idx = self.index.unsqueeze(0).expand(spec, *self.index.shape)
        out = torch.zeros(spec, batch, *self.in_shapes[0], dtype=A.dtype, device=A.device)
        return out.scatter_add(self.dim + 1, idx, A)

    def backward(self, lA, uA, boxes):
        return [(self._scatter(lA), self._scatter(uA))], 0.0, 0.0

    def forward(self, xs, boxes):
        (x,) = xs
        batch, n_in = x.lw.shape[:2]
        idx_w = self.index.unsqueeze(1).expand(batch, n_in, *self.index.shape[1:])
        d = self.dim
        return LinearBound(x.lw.gather(d + 1, idx_w), x.lb.gather(d, self.index),
                           x.uw.gather(d + 1, idx_w), x.ub.gather(d, self.index))


class LabelMargin(Op):
    """``a - g`` with ``g`` broadcasting into ``a`` along one dimension (``z - z.gather(1, y[:, None])``)."""

    kind = "label_margin"

    def bind(self, env):
        super().bind(env)
        a, g = (env[i] for i in self.inputs)
        if a.dim() != g.dim() or any(sa != sg and sg != 1 for sa, sg in zip(a.shape, g.shape, strict=True)):
            raise self.unsupported(
                f"a - b needs b to broadcast into a along size-1 dimensions, got {tuple(a.shape)} and "
                f"{tuple(g.shape)}"
            )
        self.reduce_dims = [d for d in range(1, a.dim()) if g.shape[d] == 1 and a.shape[d] != 1]
        self.same = None  # where a - g is exactly 0: g = a.gather(dim, idx) of this very a
        gnode = self.node.args[1]
        if getattr(gnode, "target", None) in GATHER_TARGETS:
            gargs, gkw = list(gnode.args), dict(gnode.kwargs)
            src = gargs[0] if gargs else gkw.get("input")
            dim = gargs[1] if len(gargs) > 1 else gkw.get("dim")
            index = self.arg(env, gargs[2] if len(gargs) > 2 else gkw.get("index"))
            if getattr(src, "name", None) == self.inputs[0] and isinstance(dim, int) and dim % a.dim() != 0:
                if isinstance(index, Tensor) and index.shape == g.shape:
                    self.same = torch.zeros(a.shape, dtype=torch.bool, device=a.device).scatter(
                        dim % a.dim(), index, True
                    )

    def _exact_zero(self, box: Interval) -> Interval:
        if self.same is None:
            return box
        zero = torch.zeros((), dtype=box.lower.dtype, device=box.lower.device)
        return Interval(torch.where(self.same, zero, box.lower), torch.where(self.same, zero, box.upper),
                        check=False)

    def ibp(self, boxes):
        a, g = boxes
        return self._exact_zero(Interval(a.lower - g.upper, a.upper - g.lower, check=False))

    def merged_ibp(self, linear_op, box: Interval) -> Interval:
        """IBP of ``(I - 1·e_yᵀ)·Linear(box)``: the margin merged into the final linear layer."""
        n = self.out_shape[0]
        eye = torch.eye(n, dtype=box.lower.dtype, device=box.lower.device)
        onehot = self.same.to(box.lower.dtype)  # (B, n): e_y
        C = eye.unsqueeze(0) - onehot.unsqueeze(1)  # row j: e_j - e_y
        return self._exact_zero(linear_op.merged_ibp(box, C))

    def backward(self, lA, uA, boxes):
        def red(A):
            return None if A is None else -A.sum(dim=[d + 1 for d in self.reduce_dims], keepdim=True)

        return [(lA, uA), (red(lA), red(uA))], 0.0, 0.0

    def forward(self, xs, boxes):
        a, g = xs
        return LinearBound(a.lw - g.uw, a.lb - g.ub, a.uw - g.lw, a.ub - g.lb)


def _max_shift(box: Interval) -> Tensor:
    """Per-sample max of the finite upper bounds (0 where none is finite), detached, ``(B, 1, ...)``."""
    up = box.upper.detach()
    finite = torch.where(torch.isfinite(up), up, torch.full_like(up, -torch.inf))
    m = finite.reshape(up.shape[0], -1).max(dim=1).values
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return m.reshape(up.shape[0], *([1] * (up.dim() - 1)))


class FusibleExp(Exp):
    """``exp``; under ``bound_opts["loss_fusion"]`` its bounds are those of ``exp(x - max_input)``."""

    max_input: Tensor | None = None

    def _fused(self) -> bool:
        return bool(self.options.get("loss_fusion", False))

    def ibp(self, boxes):
        (box,) = boxes
        if not self._fused():
            return super().ibp(boxes)
        m = self.max_input = _max_shift(box)
        return Interval(torch.exp(box.lower - m), torch.exp(box.upper - m), check=False)

    def relax(self, box):
        if not self._fused():
            return super().relax(box)
        m = self.max_input = _max_shift(box)
        r = _relax_exp(box.lower - m, box.upper - m)
        # exp(x - m) in [lw (x - m) + lb, uw (x - m) + ub]: shift the intercepts
        return type(r)(r.lw, r.lb - r.lw * m, r.uw, r.ub - r.uw * m)


def _relax_exp(lower: Tensor, upper: Tensor):
    from lirpa.relaxations import relax_exp

    return relax_exp(lower, upper, check=False)
