"""Pure-PyTorch reference of every certcore op: the test oracle and the fallback backend.

The four functions named like the ops (``norm_dist_forward``, ``norm_dist_backward``,
``bound_inf_dist_forward``, ``bound_inf_dist_backward``) take and return exactly what the
registered ``torch.ops.certcore`` ops take and return, so they can serve as kernels on any device.
They are the definition of the ops' math and conventions:

- ``y[b, o, s] = ||x[b, g*K:(g+1)*K, s] - w[o, :]||_p`` with ``K = CI / groups`` and
  ``g = o // (CO / groups)``; ``p`` in ``(0, inf]``.
- Finite ``p`` is computed as ``m * (sum (|t| / m)^p)^(1/p)`` with ``m = max |t|``: no overflow or
  underflow for any ``p`` (``p = 1000`` in float32 included); ``y = 0`` where ``m = 0``.
- ``p = inf``: ``argmax`` (int32) is the *first* index ``i`` reaching the max, encoded ``i`` when
  ``x_i - w_i >= 0`` and ``~i = -i-1`` otherwise. A NaN difference counts as reaching the max
  (``y`` is NaN then, as ``torch.amax`` gives).
- Backward, finite ``p``: ``dL/dx_i = sum_o g sign(t_i) (|t_i| / y)^(p-1)`` and
  ``dL/dw = -sum_{b,s}`` of the same, with the saved ``y``. Where ``y == 0`` (``x == w`` over the
  whole group) the gradient is defined as 0, and terms with ``t_i == 0`` contribute 0, so no NaN
  appears (for ``p <= 1`` the true derivative does not exist there; 0 is a subgradient for ``p = 1``).
- Backward, ``p = inf``: the whole gradient goes to the argmax index, with its sign.
- ``bound_inf_dist``: exact bounds of ``max_i |x_i - w_i|`` over ``lower <= x <= upper``:
  ``y_upper = max_i max(u_i - w_i, w_i - l_i)`` (arg ``i`` if ``u_i - w_i`` reaches it, preferred on
  a tie, else ``~i``) and ``y_lower = max(0, max_i max(l_i - w_i, w_i - u_i))`` (arg ``i`` if
  ``l_i - w_i`` reaches it, else ``~i``; ``INT32_MIN`` when the max is ``<= 0``, i.e. clamped: no
  gradient). Ties between indices go to the first. No EPS floor anywhere.

Memory stays bounded: every function works on chunks of batch rows and output channels whose
``(b, o, i, s)`` temporaries hold at most ``CHUNK_ELEMENTS`` elements, never the whole
``B * CO * CI * HW`` broadcast of the original implementation's fallback.

``norm_dist`` and ``bound_inf_dist`` at the bottom are differentiable conveniences (the same
forward and backward through ``torch.autograd.Function``, no op registration) for benchmarks and
for comparing against the registered ops.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "CHUNK_ELEMENTS",
    "INT32_MIN",
    "bound_inf_dist",
    "bound_inf_dist_backward",
    "bound_inf_dist_forward",
    "norm_dist",
    "norm_dist_backward",
    "norm_dist_forward",
]

CHUNK_ELEMENTS = 1 << 22  # elements of the largest (b, o, i, s) temporary: 16 MiB in float32
INT32_MIN = -(2**31)


def _chunks(B: int, N: int, K: int, HW: int) -> tuple[int, int]:
    """Batch and output-channel chunk sizes with bc * nc * K * HW <= CHUNK_ELEMENTS (at least 1 each)."""
    per_pair = max(1, K * HW)
    nc = max(1, min(N, CHUNK_ELEMENTS // per_pair))
    bc = max(1, min(B, CHUNK_ELEMENTS // (per_pair * nc)))
    return bc, nc


def _blocks(x: Tensor, w: Tensor, groups: int):
    """Yield (g, b0, b1, o0, o1, t) with t = x[b0:b1, group g, None] - w[o0:o1, :, None]: (bc, nc, K, HW)."""
    B, CI, HW = x.shape
    CO = w.shape[0]
    K, N = CI // groups, CO // groups
    bc, nc = _chunks(B, N, K, HW)
    for g in range(groups):
        xg = x[:, g * K : (g + 1) * K, :]
        for n0 in range(0, N, nc):
            o0, o1 = g * N + n0, g * N + min(N, n0 + nc)
            wc = w[o0:o1, :, None]
            for b0 in range(0, B, bc):
                b1 = min(B, b0 + bc)
                yield g, b0, b1, o0, o1, xg[b0:b1, None, :, :] - wc


def _first_index(hit: Tensor, dim: int) -> Tensor:
    """Index of the first True along dim (0 when there is none)."""
    return hit.to(torch.uint8).argmax(dim)


def _encode(idx: Tensor, positive: Tensor) -> Tensor:
    idx = idx.to(torch.int32)
    return torch.where(positive, idx, ~idx)


def _decode(arg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(index as int64, sign +1/-1, valid mask) of an encoded argmax tensor."""
    valid = arg != INT32_MIN
    pos = arg >= 0
    idx = torch.where(pos, arg, ~arg).to(torch.int64)
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    return idx, pos, valid


def norm_dist_forward(
    x: Tensor, w: Tensor, p: float, groups: int, need_argmax: bool
) -> tuple[Tensor, Tensor]:
    """(y, argmax) as the op ``certcore::norm_dist_forward``: x (B, CI, HW), w (CO, CI/groups)."""
    B, CI, HW = x.shape
    CO = w.shape[0]
    inf = math.isinf(p)
    want_arg = need_argmax and inf
    y = x.new_empty((B, CO, HW))
    arg = x.new_empty((B, CO, HW) if want_arg else (0,), dtype=torch.int32)
    for _, b0, b1, o0, o1, t in _blocks(x, w, groups):
        a = t.abs()
        m = a.amax(dim=2)  # (bc, nc, HW); NaN if any |t| is NaN
        if inf:
            y[b0:b1, o0:o1] = m
            if want_arg:
                idx = _first_index((a == m[:, :, None, :]) | a.isnan(), dim=2)
                ti = t.gather(2, idx[:, :, None, :]).squeeze(2)
                arg[b0:b1, o0:o1] = _encode(idx, ti >= 0)
            continue
        mk = m[:, :, None, :]
        safe = torch.where(mk > 0, mk, torch.ones_like(mk))
        s = (a / safe).pow(p).sum(dim=2)
        out = m * s.pow(1.0 / p)
        out = torch.where(m > 0, out, torch.zeros_like(out))  # x == w: 0
        out = torch.where(torch.isinf(m), m, out)  # an infinite difference: inf
        out = torch.where(m.isnan(), m, out)
        y[b0:b1, o0:o1] = out
    return y, arg


def norm_dist_backward(
    grad_y: Tensor,
    x: Tensor,
    w: Tensor,
    y: Tensor,
    argmax: Tensor,
    p: float,
    groups: int,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_w) as the op ``certcore::norm_dist_backward``; a skipped one is an empty tensor."""
    B, CI, HW = x.shape
    CO = w.shape[0]
    K, N = CI // groups, CO // groups
    want_x, want_w = bool(output_mask[0]), bool(output_mask[1])
    gx = torch.zeros_like(x, memory_format=torch.contiguous_format) if want_x else x.new_empty((0,))
    gw = torch.zeros_like(w, memory_format=torch.contiguous_format) if want_w else w.new_empty((0,))
    if not (want_x or want_w) or grad_y.numel() == 0:
        return gx, gw
    if math.isinf(p):
        if argmax.shape != (B, CO, HW):
            raise RuntimeError(
                "norm_dist_backward: at p = inf it needs the argmax of "
                "norm_dist_forward(..., need_argmax=True)"
            )
        idx, pos, valid = _decode(argmax)
        src = torch.where(pos, grad_y, -grad_y)
        src = torch.where(valid, src, torch.zeros_like(src))
        for g in range(groups):
            cols = slice(g * N, (g + 1) * N)
            if want_x:
                gx[:, g * K : (g + 1) * K, :].scatter_add_(1, idx[:, cols, :], src[:, cols, :])
            if want_w:
                ig = idx[:, cols, :].permute(1, 0, 2).reshape(N, B * HW)
                sg = src[:, cols, :].permute(1, 0, 2).reshape(N, B * HW)
                gw[cols].scatter_add_(1, ig, -sg)
        return gx, gw
    for g, b0, b1, o0, o1, t in _blocks(x, w, groups):
        yv = y[b0:b1, o0:o1, None, :]
        gv = grad_y[b0:b1, o0:o1, None, :]
        ratio = t.abs() / torch.where(yv > 0, yv, torch.ones_like(yv))
        term = torch.sign(t) * ratio.pow(p - 1.0)
        term = torch.where((t == 0) | (yv == 0), torch.zeros_like(term), term)
        coef = gv * term  # (bc, nc, K, HW)
        if want_x:
            gx[b0:b1, g * K : (g + 1) * K, :] += coef.sum(dim=1)
        if want_w:
            gw[o0:o1] -= coef.sum(dim=(0, 3))
    return gx, gw


def bound_inf_dist_forward(
    lower: Tensor, upper: Tensor, w: Tensor, groups: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y_lower, y_upper, arg_lower, arg_upper) as the op ``certcore::bound_inf_dist_forward``."""
    B, CI, HW = lower.shape
    CO = w.shape[0]
    y_lo = lower.new_empty((B, CO, HW))
    y_up = lower.new_empty((B, CO, HW))
    a_lo = lower.new_empty((B, CO, HW), dtype=torch.int32)
    a_up = lower.new_empty((B, CO, HW), dtype=torch.int32)
    # t = lower - w for the same blocks as upper - w
    blocks_u = _blocks(upper, w, groups)
    for (_, b0, b1, o0, o1, lw), (_, _, _, _, _, uw) in zip(_blocks(lower, w, groups), blocks_u):
        wl, wu = -lw, -uw  # w - l, w - u (negation is exact)
        hi = torch.maximum(uw, wl)
        yu = hi.amax(dim=2)
        iu = _first_index(hi == yu[:, :, None, :], dim=2)
        u_at = uw.gather(2, iu[:, :, None, :]).squeeze(2)
        y_up[b0:b1, o0:o1] = yu
        a_up[b0:b1, o0:o1] = _encode(iu, u_at == yu)
        lo = torch.maximum(lw, wu)
        ml = lo.amax(dim=2)
        il = _first_index(lo == ml[:, :, None, :], dim=2)
        l_at = lw.gather(2, il[:, :, None, :]).squeeze(2)
        y_lo[b0:b1, o0:o1] = ml.clamp_min(0)
        enc = _encode(il, l_at == ml)
        a_lo[b0:b1, o0:o1] = torch.where(ml > 0, enc, torch.full_like(enc, INT32_MIN))
    return y_lo, y_up, a_lo, a_up


def bound_inf_dist_backward(
    grad_y_lower: Tensor,
    grad_y_upper: Tensor,
    arg_lower: Tensor,
    arg_upper: Tensor,
    w: Tensor,
    CI: int,
    groups: int,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_lower, grad_upper, grad_w) as the op ``certcore::bound_inf_dist_backward``.

    y_upper with arg i: +g to upper_i, -g to w_i; with ~i: -g to lower_i, +g to w_i.
    y_lower with arg i: +g to lower_i, -g to w_i; with ~i: -g to upper_i, +g to w_i; INT32_MIN: none.
    """
    B, CO, HW = grad_y_upper.shape
    K, N = CI // groups, CO // groups
    want_l, want_u, want_w = (bool(m) for m in output_mask)
    g_lo = w.new_zeros((B, CI, HW)) if want_l else w.new_empty((0,))
    g_up = w.new_zeros((B, CI, HW)) if want_u else w.new_empty((0,))
    g_w = torch.zeros_like(w, memory_format=torch.contiguous_format) if want_w else w.new_empty((0,))
    if not (want_l or want_u or want_w) or grad_y_upper.numel() == 0:
        return g_lo, g_up, g_w
    zero = torch.zeros_like(grad_y_upper)
    iu, pu, vu = _decode(arg_upper)
    il, pl, vl = _decode(arg_lower)
    gu = torch.where(vu, grad_y_upper, zero)
    gl = torch.where(vl, grad_y_lower, zero)
    # (index, source) pairs per destination
    to_upper = [(iu, torch.where(pu, gu, zero)), (il, torch.where(pl, zero, -gl))]
    to_lower = [(iu, torch.where(pu, zero, -gu)), (il, torch.where(pl, gl, zero))]
    to_w = [(iu, torch.where(pu, -gu, gu)), (il, torch.where(pl, -gl, gl))]
    for g in range(groups):
        cols = slice(g * N, (g + 1) * N)
        rows = slice(g * K, (g + 1) * K)
        for want, dst, pairs in ((want_l, g_lo, to_lower), (want_u, g_up, to_upper)):
            if want:
                for idx, src in pairs:
                    dst[:, rows, :].scatter_add_(1, idx[:, cols, :], src[:, cols, :])
        if want_w:
            for idx, src in to_w:
                ig = idx[:, cols, :].permute(1, 0, 2).reshape(N, B * HW)
                sg = src[:, cols, :].permute(1, 0, 2).reshape(N, B * HW)
                g_w[cols].scatter_add_(1, ig, sg)
    return g_lo, g_up, g_w


# ---------------------------------------------------------------------------------------------
# Differentiable conveniences (no op registration involved)


class _NormDist(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, p: float, groups: int) -> Tensor:
        need = math.isinf(p) and (x.requires_grad or w.requires_grad)
        y, arg = norm_dist_forward(x, w, p, groups, need)
        ctx.save_for_backward(x, w, y, arg)
        ctx.p, ctx.groups = p, groups
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, w, y, arg = ctx.saved_tensors
        gx, gw = norm_dist_backward(
            grad_y.contiguous(), x, w, y, arg, ctx.p, ctx.groups, list(ctx.needs_input_grad[:2])
        )
        return (gx if ctx.needs_input_grad[0] else None, gw if ctx.needs_input_grad[1] else None, None, None)


class _BoundInfDist(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lower: Tensor, upper: Tensor, w: Tensor, groups: int):
        y_lo, y_up, a_lo, a_up = bound_inf_dist_forward(lower, upper, w, groups)
        ctx.save_for_backward(a_lo, a_up, w)
        ctx.CI, ctx.groups = lower.shape[1], groups
        return y_lo, y_up

    @staticmethod
    def backward(ctx, g_lo: Tensor, g_up: Tensor):
        a_lo, a_up, w = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:3])
        gl, gu, gw = bound_inf_dist_backward(
            g_lo.contiguous(), g_up.contiguous(), a_lo, a_up, w, ctx.CI, ctx.groups, mask
        )
        return (gl if mask[0] else None, gu if mask[1] else None, gw if mask[2] else None, None)


def norm_dist(x: Tensor, w: Tensor, p: float, groups: int = 1) -> Tensor:
    """Differentiable reference of ``certcore.ops.norm_dist`` (no input checks; x 2-D or 3-D)."""
    squeeze = x.dim() == 2
    x3 = (x.unsqueeze(-1) if squeeze else x).contiguous()
    y = _NormDist.apply(x3, w.contiguous(), float(p), int(groups))
    return y.squeeze(-1) if squeeze else y


def bound_inf_dist(lower: Tensor, upper: Tensor, w: Tensor, groups: int = 1) -> tuple[Tensor, Tensor]:
    """Differentiable reference of ``certcore.ops.bound_inf_dist`` (no input checks)."""
    squeeze = lower.dim() == 2
    lo = (lower.unsqueeze(-1) if squeeze else lower).contiguous()
    up = (upper.unsqueeze(-1) if squeeze else upper).contiguous()
    y_lo, y_up = _BoundInfDist.apply(lo, up, w.contiguous(), int(groups))
    return (y_lo.squeeze(-1), y_up.squeeze(-1)) if squeeze else (y_lo, y_up)
