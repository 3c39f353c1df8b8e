"""The operator interface shared by every bound rule, and the helpers the rules use.

Layouts (as in auto_LiRPA):

* backward (CROWN) coefficients ``A`` have shape ``(spec, batch, *node_shape)``; a bias term has shape
  ``(spec, batch)``. A rule receives ``lA`` (coefficients of the *lower* linear bound of the objective in
  terms of its output ``y``) and ``uA`` (of the upper one), and returns the coefficients in terms of each
  perturbed input plus the bias it adds: ``lA·y + lbias_out >= lA_in·x + lbias_out + lbias`` etc.
* forward-mode bounds are :class:`LinearBound` ``(lw, lb, uw, ub)``: ``lw·x₀ + lb <= y <= uw·x₀ + ub`` for
  every input point ``x₀`` of the perturbation set, with ``lw``/``uw`` of shape ``(batch, n_in, *node_shape)``
  (``n_in``: the flattened per-sample input) and ``lb``/``ub`` of shape ``(batch, *node_shape)``.
* interval (IBP) bounds are :class:`certcore.bounds.Interval`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

from certcore.bounds import Interval

__all__ = [
    "LinearBound",
    "Op",
    "UnsupportedOperationError",
    "add_bias",
    "node_sum",
    "relaxation_backward",
    "relaxation_forward",
]


class UnsupportedOperationError(NotImplementedError):
    """An operator in the traced graph that lirpa cannot bound (soundly) with the requested method.

    ``op`` is the operator (an fx target), ``node`` the graph node name, ``where`` the module path or the
    call site."""

    def __init__(self, op: object, node: str, where: str, reason: str = ""):
        self.op = op
        self.node = node
        self.where = where
        name = getattr(op, "__name__", None) or str(op)
        msg = f"unsupported operation {name!r} at graph node {node!r} ({where})"
        super().__init__(f"{msg}: {reason}" if reason else msg)


@dataclass
class LinearBound:
    """Forward-mode linear bounds ``lw·x + lb <= y <= uw·x + ub`` (see the module docstring)."""

    lw: Tensor
    lb: Tensor
    uw: Tensor
    ub: Tensor


def node_sum(t: Tensor) -> Tensor:
    """Sum a ``(spec, batch, *node_shape)`` tensor over the node dimensions -> ``(spec, batch)``."""
    return t.reshape(t.shape[0], t.shape[1], -1).sum(-1)


def add_bias(acc: Tensor | float, term: Tensor | float | None) -> Tensor | float:
    return acc if term is None else acc + term


def _weighted_sum(A: Tensor, w: Tensor) -> Tensor:
    """``Σ_node A·w`` -> ``(spec, batch)`` without materialising the product (``w``: ``(batch|1, *shape)``
    or ``(spec|1, batch|1, *shape)``, broadcastable to ``A``)."""
    s, b = A.shape[:2]
    if w.dim() == A.dim() - 1:
        w = w.expand(A.shape[1:]).reshape(b, -1)
        return torch.einsum("sbn,bn->sb", A.reshape(s, b, -1), w)
    w = w.expand(A.shape).reshape(s, b, -1)
    return torch.einsum("sbn,sbn->sb", A.reshape(s, b, -1), w)


def relaxation_backward(
    lA: Tensor | None, uA: Tensor | None, lw: Tensor, lb: Tensor, uw: Tensor, ub: Tensor
) -> tuple[Tensor | None, Tensor | None, Tensor | float, Tensor | float]:
    """Backward step through ``lw·x + lb <= y <= uw·x + ub`` (elementwise, shapes ``(batch, *shape)``, or
    ``(spec, batch, *shape)`` for per-spec slopes).

    Lower bound of ``A·y``: ``A⁺·(lw x + lb) + A⁻·(uw x + ub)``, so ``A_x = A⁺ lw + A⁻ uw`` and the bias is
    ``Σ A⁺ lb + A⁻ ub``; the upper bound swaps the roles of the two lines. Computed as
    ``A_x = A·lw + A⁻·(uw - lw)`` and ``Σ A·lb + Σ A⁻·(ub - lb)`` (one clamp, no product tensors for the
    bias)."""
    lA_x = uA_x = None
    lbias: Tensor | float = 0.0
    ubias: Tensor | float = 0.0
    dw, db = uw - lw, ub - lb
    if lA is not None:
        neg = lA.clamp(max=0)
        lA_x = torch.addcmul(lA * lw, neg, dw)
        lbias = _weighted_sum(lA, lb) + _weighted_sum(neg, db)
    if uA is not None:
        neg = uA.clamp(max=0)
        uA_x = torch.addcmul(uA * uw, neg, -dw)
        ubias = _weighted_sum(uA, ub) - _weighted_sum(neg, db)
    return lA_x, uA_x, lbias, ubias


def relaxation_forward(x: LinearBound, lw: Tensor, lb: Tensor, uw: Tensor, ub: Tensor) -> LinearBound:
    """Forward step through an elementwise relaxation: ``y >= lw·x + lb`` with ``x`` bounded by linear
    functions of the input uses ``x``'s lower function where ``lw >= 0`` and its upper one where ``lw < 0``
    (whatever the sign of the slopes: sound for any relaxation, LeakyReLU included)."""
    lw_pos, lw_neg = lw.clamp(min=0), lw.clamp(max=0)
    uw_pos, uw_neg = uw.clamp(min=0), uw.clamp(max=0)
    lw_e, uw_e = lw_pos.unsqueeze(1), lw_neg.unsqueeze(1)
    new_lw = lw_e * x.lw + uw_e * x.uw
    new_lb = lw_pos * x.lb + lw_neg * x.ub + lb
    up_pos, up_neg = uw_pos.unsqueeze(1), uw_neg.unsqueeze(1)
    new_uw = up_pos * x.uw + up_neg * x.lw
    new_ub = uw_pos * x.ub + uw_neg * x.lb + ub
    return LinearBound(new_lw, new_lb, new_uw, new_ub)


class Op:
    """One traced operation on perturbed data.

    ``inputs`` are the names of the perturbed graph nodes it reads (in order); every other argument is a
    constant (a parameter, buffer, Python number or a tensor computed from unperturbed data), resolved at
    each bound computation from the clean forward pass by :meth:`bind`.

    Class attributes: ``kind`` (a short name), ``nonlinear`` (needs its inputs' bounds for a relaxation),
    ``relu_like`` (sparse intermediate bounds apply to its input), ``ibp_intermediate`` (its own bounds
    are taken by IBP from its input's when those are known, as auto_LiRPA does for activations).
    """

    kind = "op"
    nonlinear = False
    relu_like = False
    ibp_intermediate = False

    def __init__(self, node: fx.Node, inputs: list[str], module: nn.Module | None, where: str):
        self.node = node
        self.inputs = inputs
        self.module = module
        self.where = where

    def unsupported(self, reason: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(self.node.target, self.node.name, self.where, reason)

    def arg(self, env: dict, value: object) -> object:
        """Resolve an fx argument (a node, or a nested structure holding nodes) to its clean value."""
        return fx.node.map_arg(value, lambda n: env[n.name])

    def bind(self, env: dict[str, object]) -> None:
        """Read the constants of this call from the clean forward pass ``env`` (node name -> value)."""
        self.out_shape = tuple(env[self.node.name].shape[1:])
        self.in_shapes = [tuple(env[name].shape[1:]) for name in self.inputs]

    def ibp(self, boxes: list[Interval]) -> Interval:
        raise self.unsupported("no interval (IBP) rule")

    def backward(
        self, lA: Tensor | None, uA: Tensor | None, boxes: list[Interval | None]
    ) -> tuple[list[tuple[Tensor | None, Tensor | None]], Tensor | float, Tensor | float]:
        raise self.unsupported("no backward (CROWN) rule")

    def forward(self, xs: list[LinearBound], boxes: list[Interval | None]) -> LinearBound:
        raise self.unsupported("no forward-mode rule")
