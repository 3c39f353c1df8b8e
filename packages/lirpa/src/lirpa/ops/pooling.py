"""Max pooling: ``nn.MaxPool2d`` / ``nn.MaxPool1d`` / ``nn.AdaptiveMaxPool2d`` / ``nn.AdaptiveMaxPool1d`` and
their functional forms, any kernel, stride, padding, dilation and ``ceil_mode`` (overlapping windows
included; auto_LiRPA needs kernel == stride).

Each output is ``y = max_{j in W} x_j`` over its window ``W`` (padding positions are ``-inf`` and never
win). With input bounds ``[l_j, u_j]``:

* IBP: ``[maxpool(l), maxpool(u)]`` (max is monotone in every argument: exact per output).
* lower line: ``y >= x_a`` with ``a = argmax_j l_j`` (the max is at least any of its arguments);
* upper line: with ``m = argmax_j u_j`` and ``c = max_{j != m} u_j`` (``-inf`` for a one-element window),
  ``y <= max(x_m, c)``. If ``l_m >= c`` then ``y = x_m`` exactly (upper line ``x_m``). Otherwise
  ``max(x_m, c)`` is convex in ``x_m`` on ``[l_m, u_m]`` and lies below its chord
  ``c + s (x_m - l_m)``, ``s = (u_m - c) / (u_m - l_m)`` in ``[0, 1]``: never looser than the IBP
  constant ``u_m``, and equal to it at ``x_m = u_m``. Non-finite bounds fall back to the constant ``u_m``.

Backward scatters the coefficients onto the chosen inputs (:func:`torch.Tensor.scatter_add`); forward
gathers the chosen inputs' linear bounds (the slopes are ``>= 0``, so the lower line uses the lower
function and the upper line the upper one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds import Interval
from lirpa.ops.base import LinearBound, Op

MAXPOOL_MODULES = (nn.MaxPool2d, nn.MaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d)
MAXPOOL_FUNCTIONS = (
    F.max_pool2d,
    torch.max_pool2d,
    F.max_pool1d,
    torch.max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool1d,
)
_ONE_D = (nn.MaxPool1d, nn.AdaptiveMaxPool1d, F.max_pool1d, torch.max_pool1d, F.adaptive_max_pool1d)
_ADAPTIVE = (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d, F.adaptive_max_pool2d, F.adaptive_max_pool1d)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return int(v[0]), int(v[0])
        return int(v[0]), int(v[1])
    return int(v), int(v)


class MaxPool2d(Op):
    """Max pooling over 2-D (``(B, C, H, W)``) or 1-D (``(B, C, L)``, handled as ``H = 1``) inputs:
    ``MaxPool1d/2d`` (module or functional) and ``AdaptiveMaxPool1d/2d`` (windows
    ``[floor(i·H/OH), ceil((i+1)·H/OH))``, as PyTorch computes them)."""

    kind = "max_pool2d"
    nonlinear = True
    ibp_intermediate = True

    def _params(self, env) -> dict:
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        if self.module is not None:
            m = self.module
            if isinstance(m, (nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool1d)):
                return {"output_size": m.output_size, "return_indices": m.return_indices}
            return {k: getattr(m, k) for k in names}
        args = list(self.arg(env, tuple(self.node.args)))[1:]
        kw = self.arg(env, dict(self.node.kwargs))
        if self.node.target in _ADAPTIVE:
            values = {"return_indices": False, **dict(zip(("output_size", "return_indices"), args)), **kw}
            return values
        defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False}
        values = {**defaults, **dict(zip(names, args, strict=False)), **kw}
        stride = values["stride"]
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
            values["stride"] = values["kernel_size"]
        return values

    def bind(self, env):
        target = type(self.module) if self.module is not None else self.node.target
        self.one_d, self.adaptive = target in _ONE_D, target in _ADAPTIVE
        values = self._params(env)
        if values.get("return_indices"):
            raise self.unsupported("max pooling with return_indices=True")
        super().bind(env)
        inp, out = env[self.inputs[0]], env[self.node.name]
        if inp.dim() != (3 if self.one_d else 4):
            raise self.unsupported(f"max pooling of an input of shape {tuple(inp.shape)}")
        in_shape, out_shape = tuple(inp.shape[1:]), tuple(out.shape[1:])
        if self.one_d:
            in_shape, out_shape = (in_shape[0], 1, in_shape[1]), (out_shape[0], 1, out_shape[1])
        self.values = values
        key = (in_shape, out_shape, repr(sorted(values.items())), self.adaptive)
        if getattr(self, "_key", None) != key or self.index.device != inp.device:
            self._windows(in_shape, out_shape, values, inp.device)
            self._key = key

    def _axis(self, n_in: int, n_out: int, values: dict, axis: int, device) -> tuple[Tensor, Tensor]:
        """``(K_axis, n_out)`` input positions of each window along one axis, and their validity."""
        if self.adaptive:
            i = torch.arange(n_out, device=device)
            start = (i * n_in) // n_out
            end = -((-(i + 1) * n_in) // n_out)  # ceil((i + 1) n_in / n_out)
            k = int((end - start).max())
            pos = start.unsqueeze(0) + torch.arange(k, device=device).unsqueeze(1)
            return pos, pos < end.unsqueeze(0)
        pair = _pair
        if self.one_d:
            kernel, stride = (1, pair(values["kernel_size"])[0]), (1, pair(values["stride"])[0])
            padding, dilation = (0, pair(values["padding"])[0]), (1, pair(values["dilation"])[0])
        else:
            kernel, stride = pair(values["kernel_size"]), pair(values["stride"])
            padding, dilation = pair(values["padding"]), pair(values["dilation"])
        start = torch.arange(n_out, device=device) * stride[axis] - padding[axis]
        offsets = torch.arange(kernel[axis], device=device) * dilation[axis]
        pos = start.unsqueeze(0) + offsets.unsqueeze(1)
        return pos, (pos >= 0) & (pos < n_in)

    def _windows(self, in_shape, out_shape, values, device) -> None:
        """``self.index``: ``(K, N_out)`` flat input index of each window element of each output (clamped
        where the element is padding), ``self.valid``: ``(K, N_out)`` bool."""
        c, h, w = in_shape
        _, oh, ow = out_shape
        rows, rows_ok = self._axis(h, oh, values, 0, device)  # (KH, OH)
        cols, cols_ok = self._axis(w, ow, values, 1, device)  # (KW, OW)
        kh, kw = rows.shape[0], cols.shape[0]
        r = rows.reshape(kh, 1, 1, oh, 1)
        q = cols.reshape(1, kw, 1, 1, ow)
        ok = rows_ok.reshape(kh, 1, 1, oh, 1) & cols_ok.reshape(1, kw, 1, 1, ow)
        chan = torch.arange(c, device=device).reshape(1, 1, c, 1, 1)
        flat = chan * (h * w) + r.clamp(0, h - 1) * w + q.clamp(0, w - 1)
        self.index = flat.expand(kh, kw, c, oh, ow).reshape(kh * kw, -1)
        self.valid = ok.expand(kh, kw, c, oh, ow).reshape(kh * kw, -1)
        if not bool(self.valid.any(0).all()):
            raise self.unsupported("a pooling window holds only padding")

    def _pool(self, t: Tensor) -> Tensor:
        """The pooling itself (monotone), on a ``(B, *in_shape)`` tensor."""
        if self.adaptive:
            fn = F.adaptive_max_pool1d if self.one_d else F.adaptive_max_pool2d
            return fn(t, self.values["output_size"])
        v = self.values
        fn = F.max_pool1d if self.one_d else F.max_pool2d
        return fn(
            t,
            v["kernel_size"],
            stride=v["stride"],
            padding=v["padding"],
            dilation=v["dilation"],
            ceil_mode=bool(v["ceil_mode"]),
        )

    def ibp(self, boxes):
        (box,) = boxes
        return Interval(self._pool(box.lower), self._pool(box.upper), check=False)

    def _gather(self, t: Tensor) -> Tensor:
        """``(B, *in_shape)`` -> ``(B, K, N_out)`` window values, ``-inf`` at padding."""
        flat = t.reshape(t.shape[0], -1)[:, self.index]
        return flat.masked_fill(~self.valid, -math.inf)

    def relax(self, box: Interval):
        """Per output: ``a`` (lower-line input, flat index), ``m`` (upper-line input), slope ``s`` and bias
        ``b`` of the upper line ``y <= s x_m + b``; each ``(B, N_out)``."""
        lo, hi = self._gather(box.lower), self._gather(box.upper)
        batch = lo.shape[0]
        index = self.index.unsqueeze(0).expand(batch, *self.index.shape)
        a = index.gather(1, lo.argmax(1, keepdim=True)).squeeze(1)
        if hi.shape[1] > 1:
            top, pos = hi.topk(2, dim=1)
            u_m, c, k_m = top[:, 0], top[:, 1], pos[:, 0]
        else:
            u_m, k_m = hi[:, 0], torch.zeros_like(hi[:, 0], dtype=torch.long)
            c = torch.full_like(u_m, -math.inf)
        m = index.gather(1, k_m.unsqueeze(1)).squeeze(1)
        l_m = lo.gather(1, k_m.unsqueeze(1)).squeeze(1)
        exact = l_m >= c
        finite = torch.isfinite(l_m) & torch.isfinite(u_m) & torch.isfinite(c)
        chord = ~exact & finite
        width = torch.where(chord, u_m - l_m, torch.ones_like(u_m))
        s_chord = ((u_m - c) / width).clamp(0.0, 1.0)
        s = torch.where(exact, torch.ones_like(u_m), torch.where(chord, s_chord, torch.zeros_like(u_m)))
        b = torch.where(
            exact,
            torch.zeros_like(u_m),
            torch.where(chord, c - s_chord * torch.where(chord, l_m, torch.zeros_like(l_m)), u_m),
        )
        return a, m, s, b

    def _scatter(self, A: Tensor, index: Tensor, weight: Tensor | None) -> Tensor:
        """``A`` ``(spec, B, *out_shape)`` -> ``(spec, B, *in_shape)``: coefficient ``weight·A`` added to
        input ``index`` (``(B, N_out)``) of each output."""
        spec, batch = A.shape[:2]
        flat = A.reshape(spec, batch, -1)
        if weight is not None:
            flat = flat * weight
        n_in = math.prod(self.in_shapes[0])
        out = torch.zeros(spec, batch, n_in, dtype=A.dtype, device=A.device)
        out = out.scatter_add(2, index.unsqueeze(0).expand(spec, *index.shape), flat)
        return out.reshape(spec, batch, *self.in_shapes[0])

    def backward(self, lA, uA, boxes):
        a, m, s, b = self.relax(boxes[0])
        res, biases = [], []
        for A, sign in ((lA, 1.0), (uA, -1.0)):
            if A is None:
                res.append(None)
                biases.append(0.0)
                continue
            # lower bound of A·y: A⁺ on the lower line, A⁻ on the upper one (the upper bound: swapped)
            pos, neg = A.clamp(min=0), A.clamp(max=0)
            on_lower, on_upper = (pos, neg) if sign > 0 else (neg, pos)
            res.append(self._scatter(on_lower, a, None) + self._scatter(on_upper, m, s))
            spec, batch = A.shape[:2]
            coef = on_upper.reshape(spec, batch, -1)
            term = torch.where(coef != 0, coef * b, torch.zeros_like(coef))  # no 0·inf
            biases.append(term.sum(-1))
        return [(res[0], res[1])], biases[0], biases[1]

    def forward(self, xs, boxes):
        (x,) = xs
        a, m, s, b = self.relax(boxes[0])
        batch, n_in = x.lw.shape[:2]

        def pick(t: Tensor, idx: Tensor) -> Tensor:  # (B, *in) -> (B, N_out)
            return t.reshape(batch, -1).gather(1, idx)

        def pick_w(w: Tensor, idx: Tensor) -> Tensor:  # (B, n_in, *in) -> (B, n_in, N_out)
            return w.reshape(batch, n_in, -1).gather(2, idx.unsqueeze(1).expand(batch, n_in, idx.shape[1]))

        shape = self.out_shape
        lw = pick_w(x.lw, a).reshape(batch, n_in, *shape)
        lb = pick(x.lb, a).reshape(batch, *shape)
        uw = (pick_w(x.uw, m) * s.unsqueeze(1)).reshape(batch, n_in, *shape)
        ub = (pick(x.ub, m) * s + b).reshape(batch, *shape)
        return LinearBound(lw, lb, uw, ub)
