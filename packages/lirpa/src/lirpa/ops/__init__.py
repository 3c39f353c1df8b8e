"""The operator registry: which traced call becomes which bound rule.

:func:`build_op` maps one fx node that reads perturbed data to an :class:`Op`, or raises
:class:`UnsupportedOperationError` naming the operator, the node and where it sits. Nodes that read
only unperturbed data (parameters, buffers, shapes, labels) are never bounded: they are constants,
evaluated in the clean forward pass.

Supported (first wave): Linear (``nn.Linear``, ``F.linear``, ``x @ M`` / ``torch.matmul`` with a constant
matrix), Conv2d (``nn.Conv2d``, ``F.conv2d``), BatchNorm1d/2d, ``+``/``-`` of two perturbed nodes,
``+ - * /`` by constants and ``-x``, reshapes (Flatten/view/reshape/flatten/squeeze/unsqueeze), Identity,
Dropout (eval), ReLU, LeakyReLU, Sigmoid, Tanh, Exp, Log, Square (``x*x``, ``x**2``, ``torch.pow(x, 2)``,
``torch.square``), max pooling (MaxPool1d/2d, AdaptiveMaxPool1d/2d, module or functional;
:mod:`lirpa.ops.pooling`), and any module with an ``interval_forward(box)`` method as an IBP-only leaf.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from lirpa.ops.activation import (
    POW_TARGETS,
    RECIPROCAL_FUNCTIONS,
    SQUARE_FUNCTIONS,
    LeakyReLU,
    Log,
    Reciprocal,
    ReLU,
    Sigmoid,
    Square,
    Tanh,
)
from lirpa.ops.base import LinearBound, Op, UnsupportedOperationError
from lirpa.ops.elementwise import (
    ADD_TARGETS,
    DIV_TARGETS,
    MUL_TARGETS,
    NEG_TARGETS,
    SUB_TARGETS,
    AddSub,
    ScaleShift,
)
from lirpa.ops.interval_only import IntervalOnly
from lirpa.ops.linear import MATMUL_TARGETS, Conv2d, Linear
from lirpa.ops.loss_fusion import GATHER_TARGETS, FusibleExp, Gather, LabelMargin
from lirpa.ops.pooling import MAXPOOL_FUNCTIONS, MAXPOOL_MODULES, MaxPool2d
from lirpa.ops.shape import IDENTITY_METHODS, RESHAPE_FUNCTIONS, RESHAPE_METHODS, Identity, Reshape
from lirpa.ops.structural import (
    CAT_TARGETS,
    PERMUTE_TARGETS,
    POOL_FUNCTIONS,
    POOL_MODULES,
    REDUCE_TARGETS,
    Cat,
    PerSampleLinear,
)

__all__ = ["LinearBound", "Op", "UnsupportedOperationError", "build_op", "LEAF_MODULES"]

MODULE_OPS: dict[type, type[Op]] = {
    nn.Linear: Linear,
    nn.Conv2d: Conv2d,
    nn.BatchNorm1d: ScaleShift,
    nn.BatchNorm2d: ScaleShift,
    nn.ReLU: ReLU,
    nn.LeakyReLU: LeakyReLU,
    nn.Sigmoid: Sigmoid,
    nn.Tanh: Tanh,
    nn.Flatten: Reshape,
    nn.Identity: Identity,
    nn.Dropout: Identity,
    **{t: PerSampleLinear for t in POOL_MODULES},
    **{t: MaxPool2d for t in MAXPOOL_MODULES},
    **{t: Identity for t in (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)},
}
LEAF_MODULES = tuple(MODULE_OPS)

FUNCTION_OPS: dict[object, type[Op]] = {
    F.linear: Linear,
    F.conv2d: Conv2d,
    F.relu: ReLU,
    torch.relu: ReLU,
    "relu": ReLU,
    F.leaky_relu: LeakyReLU,
    torch.sigmoid: Sigmoid,
    F.sigmoid: Sigmoid,
    "sigmoid": Sigmoid,
    torch.tanh: Tanh,
    F.tanh: Tanh,
    "tanh": Tanh,
    torch.exp: FusibleExp,  # plain exp unless bound_opts["loss_fusion"] (then exp(x - max_input))
    "exp": FusibleExp,
    torch.log: Log,
    "log": Log,
    F.dropout: Identity,
    **{t: MaxPool2d for t in MAXPOOL_FUNCTIONS},
}


def _is_exact_type(m: nn.Module, t: type) -> bool:
    """``m`` is a ``t`` whose forward is ``t``'s own (a subclass overriding forward is not ``t``)."""
    return isinstance(m, t) and type(m).forward is t.forward


def module_op(m: nn.Module) -> type[Op] | None:
    if callable(getattr(m, "interval_forward", None)):
        return IntervalOnly
    for t, op in MODULE_OPS.items():
        if _is_exact_type(m, t):
            return op
    return None


def build_op(node: fx.Node, perturbed: set[str], model: nn.Module, where: str) -> Op:
    """The bound rule for ``node`` (which reads at least one perturbed node), or
    :class:`UnsupportedOperationError`."""
    args = [a for a in node.args]
    inputs = [a.name for a in node.all_input_nodes if a.name in perturbed]
    uniq = list(dict.fromkeys(inputs))

    def fail(reason: str = "") -> UnsupportedOperationError:
        return UnsupportedOperationError(node.target, node.name, where, reason)

    if node.op == "call_module":
        m = model.get_submodule(node.target)
        op = module_op(m)
        if op is None:
            return _raise(fail(f"no bound rule for module type {type(m).__name__}"))
        if len(uniq) != 1 or not (args and getattr(args[0], "name", None) == uniq[0]):
            return _raise(fail("only the first argument of a module may be perturbed"))
        return op(node, uniq, m, where)

    target = node.target
    if target in ADD_TARGETS or target in SUB_TARGETS:
        if len(args) == 2 and all(getattr(a, "name", None) in perturbed for a in args):
            if target in SUB_TARGETS and getattr(args[1], "target", None) in GATHER_TARGETS:
                return LabelMargin(node, [args[0].name, args[1].name], None, where)  # z - z.gather(1, y)
            sign = 1.0 if target in ADD_TARGETS else -1.0
            if node.kwargs.get("alpha", 1) != 1:
                return _raise(fail("add/sub with alpha is not supported"))
            return AddSub(node, [args[0].name, args[1].name], None, where, sign)
        return ScaleShift(node, uniq, None, where)
    if target in MUL_TARGETS:
        if len(args) == 2 and all(getattr(a, "name", None) in perturbed for a in args):
            if args[0] is args[1]:
                return Square(node, uniq, None, where)
            return _raise(
                fail("product of two different perturbed tensors (a bilinear term) has no bound rule yet")
            )
        return ScaleShift(node, uniq, None, where)
    if (
        target in DIV_TARGETS
        and len(uniq) == 1
        and len(args) == 2
        and getattr(args[1], "name", None) == uniq[0]
    ):
        if isinstance(args[0], (int, float)) and args[0] == 1 and not node.kwargs:
            return Reciprocal(node, uniq, None, where)  # 1 / x
        return _raise(fail("division by a perturbed tensor: only 1 / x (reciprocal) is supported"))
    if target in DIV_TARGETS or target in NEG_TARGETS:
        if len(uniq) != 1:
            return _raise(fail("division of two perturbed tensors has no bound rule"))
        return ScaleShift(node, uniq, None, where)
    if target in RECIPROCAL_FUNCTIONS:
        return _single(Reciprocal, node, uniq, where, fail)
    if target in GATHER_TARGETS:
        return _single(Gather, node, uniq, where, fail)
    if target in CAT_TARGETS:
        return Cat(node, uniq, None, where)
    if target in POOL_FUNCTIONS or target is operator.getitem:
        return _single(PerSampleLinear, node, uniq, where, fail)
    if target in PERMUTE_TARGETS or target in REDUCE_TARGETS:
        if node.op == "call_function" or node.op == "call_method":
            return _single(PerSampleLinear, node, uniq, where, fail)
    if target in POW_TARGETS:
        exponent = args[1] if len(args) > 1 else node.kwargs.get("exponent")
        if getattr(args[0], "name", None) == uniq[0] and len(uniq) == 1 and exponent in (2, 2.0):
            return Square(node, uniq, None, where)
        return _raise(fail(f"power with exponent {exponent!r}: only x**2 is supported"))
    if target in SQUARE_FUNCTIONS:
        return Square(node, uniq, None, where)
    if target in MATMUL_TARGETS:
        if len(uniq) == 1 and getattr(args[0], "name", None) == uniq[0]:
            return Linear(node, uniq, None, where)
        return _raise(fail("matmul needs the perturbed tensor on the left and a constant on the right"))
    if target in RESHAPE_FUNCTIONS or (node.op == "call_method" and target in RESHAPE_METHODS):
        return _single(Reshape, node, uniq, where, fail)
    if node.op == "call_method" and target in IDENTITY_METHODS:
        return _single(Identity, node, uniq, where, fail)
    if target in FUNCTION_OPS:
        op = FUNCTION_OPS[target]
        if target is F.dropout:
            training = node.kwargs.get("training", args[2] if len(args) > 2 else True)
            if training is not False:
                return _raise(fail("F.dropout with training=True is random"))
        return _single(op, node, uniq, where, fail)
    return _raise(fail("no bound rule for this operator"))


def _single(op: type[Op], node: fx.Node, uniq: list[str], where: str, fail) -> Op:
    first = node.args[0] if node.args else node.kwargs.get("input")
    if len(uniq) != 1 or getattr(first, "name", None) != uniq[0]:
        raise fail("only the first argument may be perturbed")
    return op(node, uniq, None, where)


def _raise(err: Exception):
    raise err
