"""Graph capture with ``torch.fx``.

The model is traced once by :func:`trace` with a tracer whose leaf modules are the modules lirpa has a
rule for (and every module with an ``interval_forward`` method), so their module paths survive as
``call_module`` targets; everything else is traced through. :func:`run_graph` evaluates the graph on
concrete inputs (the clean forward pass), resolving parameters and submodules on the live model at
each call, so the bounds use the model's own parameters.

Node names: every traced operation is a :class:`GraphNode` named by its fx node name (``layers_3``,
``relu``, ``add_1``, ...); ``path`` is the module path of a ``call_module`` node (``layers.3``), or, for a
functional call, the path of the module whose ``forward`` made it (``""`` at the top level) followed by the
call in brackets, e.g. ``block1 [add]``. ``BoundedModule[...]`` accepts either the node name or, for a
module, its path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from lirpa.ops import UnsupportedOperationError, build_op, module_op
from lirpa.ops.base import Op

__all__ = ["GraphNode", "LirpaTracer", "trace", "run_graph", "build_nodes"]

# Calls whose result never depends on the *values* of their tensor arguments.
VALUE_FREE_METHODS = {"size", "dim", "numel", "new_zeros", "new_ones", "new_empty", "new_full"}
VALUE_FREE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"}
VALUE_FREE_FUNCTIONS = {
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    torch.numel,
}


_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS_FILE = os.path.abspath(__file__)


def _user_call_site() -> str:
    """``file:line in function`` of the innermost frame outside torch and this module (cheap: no
    traceback symbolisation, unlike fx's ``record_stack_traces``)."""
    frame = sys._getframe(2)
    while frame is not None:
        fname = frame.f_code.co_filename
        if not fname.startswith(_TORCH_DIR) and os.path.abspath(fname) != _THIS_FILE:
            return f"{fname}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return ""


class LirpaTracer(fx.Tracer):
    """Keeps supported layers (and modules with ``interval_forward``) as leaves."""

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["lirpa_site"] = _user_call_site()
        return node

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_op(m) is not None:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.Graph:
    try:
        return LirpaTracer().trace(model)
    except Exception as exc:  # data-dependent control flow and other untraceable code
        raise UnsupportedOperationError(
            "trace",
            "<graph>",
            type(model).__name__,
            f"torch.fx could not trace the model ({type(exc).__name__}: {exc}); bounds need a static graph "
            "(no Python control flow on tensor values)",
        ) from exc


def _fetch_attr(model: nn.Module, target: str) -> object:
    obj: object = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def run_graph(
    graph: fx.Graph,
    model: nn.Module,
    inputs: tuple,
    no_grad: AbstractSet[str] = frozenset(),
    reuse: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Evaluate ``graph`` on ``inputs``; returns the value of every node, keyed by node name. Nodes
    named in ``no_grad`` are evaluated without recording autograd history; the values of nodes in
    ``reuse`` are taken from it instead of computed."""
    env: dict[str, object] = {}
    grad_on = torch.is_grad_enabled()
    it = iter(inputs)
    for node in graph.nodes:
        if reuse is not None and node.name in reuse:
            env[node.name] = reuse[node.name]
            continue
        if node.op == "placeholder":
            try:
                value = next(it)
            except StopIteration:
                if not node.args:
                    raise TypeError(f"the model needs an input for {node.target!r}") from None
                value = node.args[0]
            if isinstance(value, Tensor) and type(value) is not Tensor:
                value = value.as_subclass(Tensor)
            env[node.name] = value
            continue
        if node.op == "output":
            env[node.name] = fx.node.map_arg(node.args[0], lambda n: env[n.name])
            continue
        args = fx.node.map_arg(node.args, lambda n: env[n.name])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n.name])
        with torch.set_grad_enabled(grad_on and node.name not in no_grad):
            if node.op == "get_attr":
                value = _fetch_attr(model, node.target)
            elif node.op == "call_module":
                value = model.get_submodule(node.target)(*args, **kwargs)
            elif node.op == "call_function":
                value = node.target(*args, **kwargs)
            elif node.op == "call_method":
                self_obj, *rest = args
                value = getattr(self_obj, node.target)(*rest, **kwargs)
            else:  # pragma: no cover
                raise RuntimeError(f"unknown fx node kind {node.op}")
        env[node.name] = value
    return env


def where(node: fx.Node) -> str:
    """The module path (call_module) or ``owner [call]`` with the call site's source line if known."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    owner = ""
    if stack:
        last = list(stack.values())[-1]
        owner = last[0] if isinstance(last, tuple) else str(last)
    call = getattr(node.target, "__name__", str(node.target))
    site = f"{owner} [{call}]" if owner else f"[{call}]"
    if node.meta.get("lirpa_site"):
        site += f" at {node.meta['lirpa_site']}"
    return site


@dataclass
class GraphNode:
    """One node of the bounded graph. ``op`` is None for roots (perturbed inputs) and constants."""

    name: str
    path: str
    fx_node: fx.Node
    op: Op | None
    inputs: list[str]
    is_root: bool = False
    users: list[str] = field(default_factory=list)


def build_nodes(
    graph: fx.Graph, model: nn.Module, env: dict[str, object]
) -> tuple[list[GraphNode], set[str], str]:
    """Classify nodes (perturbed or constant) from the example pass ``env`` and build a rule for every
    perturbed one. Returns ``(perturbed nodes in topological order, root names, output node name)``."""
    perturbed: set[str] = set()
    roots: set[str] = set()
    nodes: list[GraphNode] = []
    output = None
    for node in graph.nodes:
        value = env[node.name]
        if node.op == "placeholder":
            if isinstance(value, Tensor) and value.is_floating_point():
                perturbed.add(node.name)
                roots.add(node.name)
                nodes.append(GraphNode(node.name, str(node.target), node, None, [], is_root=True))
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or not isinstance(env[out.name], Tensor):
                raise TypeError(
                    "the model's output must be a single Tensor, got "
                    f"{type(env[node.name]).__name__}; wrap the model so that it returns one tensor"
                )
            output = out.name
            continue
        reads = [a.name for a in node.all_input_nodes if a.name in perturbed]
        if not reads:
            continue
        if node.op == "call_method" and node.target in VALUE_FREE_METHODS:
            continue
        if node.op == "call_function" and node.target in VALUE_FREE_FUNCTIONS:
            continue
        if node.op == "call_function" and node.target is getattr and node.args[1] in VALUE_FREE_ATTRS:
            continue
        # anything else computed from perturbed data (tuples, integer tensors included) needs a rule
        loc = where(node)
        op = build_op(node, perturbed, model, loc)
        perturbed.add(node.name)
        nodes.append(GraphNode(node.name, loc, node, op, list(op.inputs)))
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for i in n.inputs:
            by_name[i].users.append(n.name)
    if output is None:  # pragma: no cover - fx graphs always have an output node
        raise TypeError("the traced model has no output")
    return nodes, roots, output
