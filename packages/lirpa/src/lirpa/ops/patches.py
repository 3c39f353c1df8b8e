"""Patches mode (``bound_opts={"conv_mode": "patches"}``): backward coefficients kept as local kernels.

When CROWN bounds an intermediate node of a CNN, each spec row is one-hot on one neuron ``(c, y, x)``.
Pulled back through convolutions, BatchNorm, elementwise relaxations and residual additions, the row only
ever touches a window of each node upstream, so instead of the dense ``(spec, batch, C, H, W)`` tensor we
keep, per row, the window's kernel:

* ``patches``: ``(spec, batch, C, kh, kw)``, the coefficients of row ``s`` on node rows
  ``top[s] .. top[s] + kh - 1`` and columns ``left[s] .. left[s] + kw - 1``;
* ``top``, ``left``: ``(spec,)`` long tensors, the window's corner in the node's coordinates (it may lie
  outside the image: entries outside it are kept at exactly zero, the invariant every rule maintains);
* ``shape``: the node's ``(C, H, W)``.

Rules (:func:`patches_backward`), all exactly the dense rules restricted to the window:

* Conv2d: ``conv_transpose2d`` of the kernel with the weight (stride, dilation, groups of the layer, no
  padding); the window moves to ``top·stride - padding`` and grows to ``(kh-1)·stride + dil·(k-1) + 1``;
  entries that land outside the input image are zeroed. Bias ``Σ A[c] b[c]``.
* Elementwise relaxations (ReLU, …) and ScaleShift (BatchNorm, ``x·s + t``): the slopes / scales /
  shifts are *gathered* on each row's window (zero outside the image) and applied elementwise.
* Add / Sub / Identity pass the kernels on; two kernels for the same node (a residual join) are summed
  after aligning their windows (same offset between the two windows for every row, else dense).
* Anything else (Flatten, Linear, pooling, α-CROWN's per-spec slopes) gets the dense matrix
  (:meth:`Patches.to_dense`), and so does an ℓp (p < ∞) input; an ℓ∞ input box is concretised directly
  on the windows (``Σ A·c ± Σ |A|·r`` with ``c``, ``r`` gathered on each window).

Only intermediate bounds use patches (the final node's spec ``C`` is dense); bounds equal matrix mode's up
to floating-point rounding, and memory per row is ``batch·C·kh·kw`` instead of ``batch·C·H·W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Patches", "add_A", "patches_backward", "to_dense", "concretize_box"]


class Patches:
    """Per-row local kernels of a backward coefficient tensor (see the module docstring)."""

    def __init__(self, patches: Tensor, top: Tensor, left: Tensor, shape: tuple[int, int, int]):
        self.patches, self.top, self.left, self.shape = patches, top, left, tuple(shape)

    @classmethod
    def one_hot(cls, rows: Tensor, batch: int, shape: tuple[int, int, int], like: Tensor) -> Patches:
        """Spec rows one-hot on the flat neurons ``rows`` of a node of shape ``(C, H, W)``."""
        c, h, w = shape
        ch, pos = rows // (h * w), rows % (h * w)
        p = torch.zeros(len(rows), batch, c, 1, 1, dtype=like.dtype, device=like.device)
        p[torch.arange(len(rows), device=rows.device), :, ch] = 1.0
        return cls(p, pos // w, pos % w, shape)

    @property
    def kernel(self) -> tuple[int, int]:
        return self.patches.shape[-2], self.patches.shape[-1]

    def with_patches(self, p: Tensor) -> Patches:
        return Patches(p, self.top, self.left, self.shape)

    def __neg__(self) -> Patches:
        return self.with_patches(-self.patches)

    # --- windows -------------------------------------------------------------------------------------
    def _index(self) -> tuple[Tensor, Tensor, tuple[int, int, int, int]]:
        """Row / column indices ``(spec, kh, kw)`` into the node padded by ``(pt, pb, pl, pr)``."""
        kh, kw = self.kernel
        _, h, w = self.shape
        pt = max(0, -int(self.top.min()))
        pb = max(0, int(self.top.max()) + kh - h)
        pl = max(0, -int(self.left.min()))
        pr = max(0, int(self.left.max()) + kw - w)
        dev = self.top.device
        ys = (self.top + pt).reshape(-1, 1, 1) + torch.arange(kh, device=dev).reshape(1, -1, 1)
        xs = (self.left + pl).reshape(-1, 1, 1) + torch.arange(kw, device=dev).reshape(1, 1, -1)
        return ys.expand(-1, kh, kw), xs.expand(-1, kh, kw), (pt, pb, pl, pr)

    def gather(self, t: Tensor) -> Tensor:
        """``t`` (``(b, C|1, H, W)``, zero outside the image) on every row's window ->
        ``(spec, b, C|1, kh, kw)``: one ``index_select`` of whole pixel rows (``b·C`` values each) of
        the padded map laid out pixel-major."""
        ys, xs, (pt, pb, pl, pr) = self._index()
        padded = F.pad(t, (pl, pr, pt, pb))
        b, c, hp, wp = padded.shape
        pixels = padded.permute(2, 3, 0, 1).reshape(hp * wp, b * c)
        spec, kh, kw = ys.shape
        out = pixels.index_select(0, (ys * wp + xs).reshape(-1)).reshape(spec, kh, kw, b, c)
        return out.permute(0, 3, 4, 1, 2).contiguous()

    def gather_many(self, ts: list[Tensor]) -> list[Tensor]:
        """:meth:`gather` of several maps of the same channel count at once."""
        batch = max(t.shape[0] for t in ts)
        stacked = torch.cat([t.expand(batch, *t.shape[1:]) for t in ts], dim=1)
        return list(self.gather(stacked).chunk(len(ts), dim=2))

    def mask(self, like: Tensor) -> Tensor:
        """``(spec, 1, 1, kh, kw)``: 1 where a row's window lies inside the image, else 0."""
        kh, kw = self.kernel
        _, h, w = self.shape
        dev = self.top.device
        ys = self.top.reshape(-1, 1) + torch.arange(kh, device=dev)
        xs = self.left.reshape(-1, 1) + torch.arange(kw, device=dev)
        inside = ((ys >= 0) & (ys < h)).unsqueeze(2) & ((xs >= 0) & (xs < w)).unsqueeze(1)
        return inside.to(like.dtype).reshape(-1, 1, 1, kh, kw)

    def to_dense(self) -> Tensor:
        """The dense ``(spec, batch, C, H, W)`` tensor."""
        ys, xs, (pt, pb, pl, pr) = self._index()
        spec, batch, c, kh, kw = self.patches.shape
        _, h, w = self.shape
        dense = self.patches.new_zeros(spec, h + pt + pb, w + pl + pr, batch, c)
        rows = torch.arange(spec, device=ys.device).reshape(-1, 1, 1).expand(-1, kh, kw)
        dense = dense.index_put((rows, ys, xs), self.patches.permute(0, 3, 4, 1, 2))
        dense = dense.permute(0, 3, 4, 1, 2)
        return dense[:, :, :, pt : pt + h, pl : pl + w]


def to_dense(A):
    return A.to_dense() if isinstance(A, Patches) else A


def _pad_to(p: Patches, top: Tensor, left: Tensor, kh: int, kw: int) -> Tensor:
    dt, dl = int(p.top[0] - top[0]), int(p.left[0] - left[0])
    h, w = p.kernel
    return F.pad(p.patches, (dl, kw - w - dl, dt, kh - h - dt))


def add_A(a, b):
    """Sum of two coefficient tensors for the same node (dense, or :class:`Patches`)."""
    if not isinstance(a, Patches) and not isinstance(b, Patches):
        return a + b
    if isinstance(a, Patches) and isinstance(b, Patches):
        dt, dl = a.top - b.top, a.left - b.left
        if bool((dt == dt[0]).all()) and bool((dl == dl[0]).all()):
            top, left = torch.minimum(a.top, b.top), torch.minimum(a.left, b.left)
            kh = int(max(a.top[0] + a.kernel[0], b.top[0] + b.kernel[0]) - top[0])
            kw = int(max(a.left[0] + a.kernel[1], b.left[0] + b.kernel[1]) - left[0])
            summed = _pad_to(a, top, left, kh, kw) + _pad_to(b, top, left, kh, kw)
            return Patches(summed, top, left, a.shape)
    return to_dense(a) + to_dense(b)


def _node_sum(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1).sum(-1)


def _conv_backward(op, P: Patches) -> tuple[Patches, Tensor | float]:
    spec, batch, c_out, kh, kw = P.patches.shape
    p = F.conv_transpose2d(
        P.patches.reshape(spec * batch, c_out, kh, kw),
        op.weight,
        None,
        op.stride,
        0,
        0,
        op.groups,
        op.dilation,
    )
    p = p.reshape(spec, batch, *p.shape[1:])
    out = Patches(
        p, P.top * op.stride[0] - op.padding[0], P.left * op.stride[1] - op.padding[1], op.in_shapes[0]
    )
    out = out.with_patches(out.patches * out.mask(p))
    bias = 0.0 if op.bias is None else (P.patches.sum((3, 4)) * op.bias).sum(-1)
    return out, bias


def _full(t: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A constant broadcastable to ``(batch, C, H, W)`` as a 4-D tensor (batch dim kept at 1 if it is)."""
    t = torch.as_tensor(t)
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t.expand(t.shape[0], *shape)


def _scale_backward(op, P: Patches) -> tuple[Patches, Tensor | float]:
    f = op._factor()
    p = P.patches
    if f is not None:
        f = torch.as_tensor(f, dtype=p.dtype, device=p.device)
        if f.dim() == 0:
            p = p * f
        elif f.dim() == 4 and f.shape[-2:] == (1, 1):
            p = p * f.reshape(1, f.shape[0], f.shape[1], 1, 1)
        else:
            p = p * P.gather(_full(f, P.shape))
    bias: Tensor | float = 0.0
    if op.shift is not None:
        s = torch.as_tensor(op.shift, dtype=p.dtype, device=p.device)
        if s.dim() == 4 and s.shape[-2:] == (1, 1):
            bias = (P.patches.sum((3, 4)) * s.reshape(1, s.shape[0], s.shape[1])).sum(-1)
        else:
            bias = _node_sum(P.patches * P.gather(_full(s, P.shape)))
    return P.with_patches(p), bias


def _relax_backward(op, box, lA: Patches | None, uA: Patches | None):
    r = op.relax_optimized(box)
    if r.lw.dim() != 4:
        return None
    if lA is not None and uA is not None and not _same_windows(lA, uA):
        return None
    # relaxation_backward's algebra with the differences taken on the maps before gathering:
    #   lA_x = lA·lw + lA⁻·(uw - lw),  Σ lA·lb + Σ lA⁻·(ub - lb)
    #   uA_x = uA·lw + uA⁺·(uw - lw),  Σ uA·lb + Σ uA⁺·(ub - lb)
    # and no gather of lb where it is 0 (ReLU's lower lines all pass through the origin).
    P = lA if lA is not None else uA
    maps = [r.lw, r.uw - r.lw, r.ub - r.lb] + ([r.lb] if bool(r.lb.any()) else [])
    lw, dw, db, *lb = P.gather_many([_full(t, P.shape) for t in maps])
    outs, biases = [], []
    for A, part in ((lA, lambda a: a.clamp(max=0)), (uA, lambda a: a.clamp(min=0))):
        if A is None:
            outs.append(None)
            biases.append(0.0)
            continue
        a, side = A.patches, part(A.patches)
        outs.append(A.with_patches(torch.addcmul(a * lw, side, dw)))
        biases.append(_node_sum(side * db) + (_node_sum(a * lb[0]) if lb else 0.0))
    return [(outs[0], outs[1])], biases[0], biases[1]


def _same_windows(a: Patches, b: Patches) -> bool:
    return a.kernel == b.kernel and bool((a.top == b.top).all()) and bool((a.left == b.left).all())


def patches_backward(op, lA, uA, boxes):
    """The backward rule of ``op`` on :class:`Patches` coefficients, or None when ``op`` needs them dense."""
    from lirpa.ops.activation import Activation
    from lirpa.ops.elementwise import AddSub, ScaleShift
    from lirpa.ops.linear import Conv2d
    from lirpa.ops.shape import Identity

    if (lA is not None and not isinstance(lA, Patches)) or (uA is not None and not isinstance(uA, Patches)):
        return None
    if isinstance(op, (Conv2d, ScaleShift)):  # affine: the same rule for both sides
        rule = _conv_backward if isinstance(op, Conv2d) else _scale_backward
        (lo, lb), (uo, ub) = ((None, 0.0) if A is None else rule(op, A) for A in (lA, uA))
        return [(lo, uo)], lb, ub
    if isinstance(op, Activation) and getattr(op, "alpha", None) is None and boxes and boxes[0] is not None:
        return _relax_backward(op, boxes[0], lA, uA)
    if isinstance(op, (AddSub, Identity)):
        return op.backward(lA, uA, boxes)
    return None


def concretize_box(A: Patches, box: tuple[Tensor, Tensor], sign: float) -> Tensor:
    """``min`` (sign -1) / ``max`` (+1) of ``A·x`` over the box ``[lower, upper]`` (``(batch, C, H, W)``)
    -> ``(spec, batch)``."""
    lower, upper = box
    center, radius = A.gather_many([(upper + lower) / 2, (upper - lower) / 2])
    return _node_sum(A.patches * center) + sign * _node_sum(A.patches.abs() * radius)
