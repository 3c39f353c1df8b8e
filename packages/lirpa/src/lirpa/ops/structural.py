"""Per-sample linear maps with nonnegative coefficients, and concatenation.

``PerSampleLinear`` is any map ``y = f(x)`` that is linear, has nonnegative coefficients, no bias, and
treats every sample of the batch alike: ``nn.AvgPool2d`` / ``F.avg_pool2d`` (zero padding counts as 0),
``nn.AdaptiveAvgPool2d``, ``x[:, i:j, ...]`` (slices and integer indices behind the batch dimension),
``x.permute(0, ...)``, ``x.transpose(i, j)`` (i, j > 0), ``x.sum(dims)`` / ``x.mean(dims)`` over
non-batch dimensions.
IBP: ``[f(l), f(u)]`` (exact: the coefficients are nonnegative). Forward: ``f`` applied to ``lw``, ``lb``
(and ``uw``, ``ub``) per input coordinate. Backward: ``A_x = fᵀ A``, the vector-Jacobian product of ``f``
(computed by autograd on the ``(spec·batch, ...)`` reshaped coefficients; exact because ``f`` is linear).

``Cat`` is ``torch.cat`` along a non-batch dimension of perturbed tensors and constants: IBP concatenates
the intervals (constants as points), backward splits ``A`` and turns the constants' parts into bias,
forward concatenates the linear bounds (zero weights for constants).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds import Interval
from lirpa.ops.base import LinearBound, Op, node_sum

POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d)
POOL_FUNCTIONS = (F.avg_pool2d, F.adaptive_avg_pool2d, F.avg_pool1d, F.adaptive_avg_pool1d)
PERMUTE_TARGETS = (torch.permute, "permute", torch.transpose, "transpose")
REDUCE_TARGETS = (torch.sum, "sum", torch.mean, "mean")
CAT_TARGETS = (torch.cat, torch.concat, torch.concatenate)


class PerSampleLinear(Op):
    kind = "per_sample_linear"
    ibp_intermediate = True

    def bind(self, env):
        super().bind(env)
        node = self.node
        if self.module is not None:
            self.fn = self.module
        else:
            args = list(node.args)
            pos = next(i for i, a in enumerate(args) if getattr(a, "name", None) == self.inputs[0])
            if pos != 0:
                raise self.unsupported("the perturbed tensor must be the first argument")
            rest = self.arg(env, tuple(args[1:]))
            kwargs = self.arg(env, dict(node.kwargs))
            self._check_args(node.target, rest, kwargs, env[self.inputs[0]].dim())
            target = node.target
            if isinstance(target, str):
                self.fn = lambda t: getattr(t, target)(*rest, **kwargs)
            else:
                self.fn = lambda t: target(t, *rest, **kwargs)
        inp, out = env[self.inputs[0]], env[node.name]
        if out.dim() == 0 or out.shape[0] != inp.shape[0]:
            raise self.unsupported(f"maps the batch dimension ({tuple(inp.shape)} -> {tuple(out.shape)})")
        self.kind = getattr(node.target, "__name__", str(node.target))

    def _check_args(self, target, rest, kwargs, ndim):
        if target is operator.getitem:
            idx = rest[0] if isinstance(rest[0], tuple) else (rest[0],)
            if any(not isinstance(i, (int, slice, type(Ellipsis))) for i in idx):
                raise self.unsupported("only slices and integer indices are supported (no tensors / None)")
            explicit = sum(i is not Ellipsis for i in idx)
            keeps = bool(idx) and (idx[0] == slice(None) or (idx[0] is Ellipsis and explicit < ndim))
            if not keeps:
                raise self.unsupported("indexing must keep the batch dimension (x[:, ...])")
        elif target in PERMUTE_TARGETS:
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
            dims = list(dims) or list(kwargs.get("dims", ())) or [kwargs.get("dim0"), kwargs.get("dim1")]
            if target in (torch.permute, "permute"):
                if dims[0] % ndim != 0:
                    raise self.unsupported("permute must keep the batch dimension first")
            elif any(d is None or d % ndim == 0 for d in dims):
                raise self.unsupported("transpose must not move the batch dimension")
        elif target in REDUCE_TARGETS:
            dim = rest[0] if rest else kwargs.get("dim")
            dims = dim if isinstance(dim, (tuple, list)) else [dim]
            if dim is None or any(d % ndim == 0 for d in dims) or (len(rest) > 2 or "dtype" in kwargs):
                raise self.unsupported("sum/mean must reduce over non-batch dimensions only (give dim=...)")

    def ibp(self, boxes):
        (box,) = boxes
        return Interval(self.fn(box.lower), self.fn(box.upper), check=False)

    def _vjp(self, A: Tensor) -> Tensor:
        spec, batch = A.shape[:2]
        x = torch.zeros(spec * batch, *self.in_shapes[0], dtype=A.dtype, device=A.device, requires_grad=True)
        with torch.enable_grad():
            y = self.fn(x)
            (g,) = torch.autograd.grad(
                y, x, A.reshape(spec * batch, *self.out_shape), create_graph=A.requires_grad
            )
        return g.reshape(spec, batch, *self.in_shapes[0])

    def backward(self, lA, uA, boxes):
        return [(None if lA is None else self._vjp(lA), None if uA is None else self._vjp(uA))], 0.0, 0.0

    def forward(self, xs, boxes):
        (x,) = xs
        batch, n_in = x.lw.shape[:2]

        def per_coord(w: Tensor) -> Tensor:
            y = self.fn(w.reshape(batch * n_in, *w.shape[2:]))
            return y.reshape(batch, n_in, *y.shape[1:])

        return LinearBound(per_coord(x.lw), self.fn(x.lb), per_coord(x.uw), self.fn(x.ub))


class Cat(Op):
    kind = "cat"

    def bind(self, env):
        self.out_shape = tuple(env[self.node.name].shape[1:])
        self.in_shapes = [tuple(env[name].shape[1:]) for name in self.inputs]
        parts = self.node.args[0]
        dim = self.node.args[1] if len(self.node.args) > 1 else self.node.kwargs.get("dim", 0)
        ndim = env[self.node.name].dim()
        if dim % ndim == 0:
            raise self.unsupported("concatenation along the batch dimension")
        self.dim = dim % ndim
        self.parts = []  # (name or None, constant or None, size along dim)
        for p in parts:
            if getattr(p, "name", None) in self.inputs:
                self.parts.append((p.name, None, env[p.name].shape[self.dim]))
            else:
                const = self.arg(env, p)
                if not isinstance(const, Tensor):
                    raise self.unsupported("torch.cat of a non-tensor")
                self.parts.append((None, const, const.shape[self.dim]))
        order = [name for name, _, _ in self.parts if name is not None]
        if len(set(order)) != len(order):
            raise self.unsupported("the same perturbed tensor twice in one torch.cat")

    def ibp(self, boxes):
        it = iter(boxes)
        lows, highs = [], []
        for name, const, _ in self.parts:
            if name is None:
                lows.append(const)
                highs.append(const)
            else:
                box = next(it)
                lows.append(box.lower)
                highs.append(box.upper)
        return Interval(torch.cat(lows, self.dim), torch.cat(highs, self.dim), check=False)

    def backward(self, lA, uA, boxes):
        sizes = [s for _, _, s in self.parts]
        outs = {}
        biases = []
        for key, A in (("l", lA), ("u", uA)):
            bias: Tensor | float = 0.0
            if A is not None:
                for (name, const, _), piece in zip(self.parts, A.split(sizes, self.dim + 1), strict=True):
                    if name is None:
                        bias = bias + node_sum(piece * const)
                    else:
                        outs.setdefault(name, {})[key] = piece
            biases.append(bias)
        return (
            [(outs.get(n, {}).get("l"), outs.get(n, {}).get("u")) for n in self.inputs],
            biases[0],
            biases[1],
        )

    def forward(self, xs, boxes):
        it = iter(xs)
        lw, lb, uw, ub = [], [], [], []
        ref = xs[0]
        batch, n_in = ref.lw.shape[:2]
        for name, const, _ in self.parts:
            if name is None:
                c = const.expand(batch, *const.shape[1:]) if const.shape[0] == 1 else const
                zero = torch.zeros(batch, n_in, *c.shape[1:], dtype=c.dtype, device=c.device)
                lw.append(zero)
                uw.append(zero)
                lb.append(c)
                ub.append(c)
            else:
                x = next(it)
                lw.append(x.lw)
                uw.append(x.uw)
                lb.append(x.lb)
                ub.append(x.ub)
        d = self.dim
        return LinearBound(torch.cat(lw, d + 1), torch.cat(lb, d), torch.cat(uw, d + 1), torch.cat(ub, d))
