"""``BoundedModule``: a traced model that computes IBP, CROWN, CROWN-IBP and forward-mode bounds.

Methods (``compute_bounds(method=...)``, case-insensitive, auto_LiRPA's aliases):

* ``"IBP"``: interval arithmetic through every node. With ``C`` and a final Linear layer, ``C`` is merged
  into it (``W' = C W``, ``b' = C b``) before the interval step; otherwise ``C`` is applied to the output
  interval.
* ``"backward"`` = ``"CROWN"``: every intermediate bound a nonlinearity needs comes from a backward pass,
  with auto_LiRPA's *sparse intermediate bounds*: for the input ``z`` of a ReLU/LeakyReLU, a reference
  interval is first taken by IBP from the bounds already known upstream (no gradient); neurons that are
  unstable (``l < 0 < u``) in *any* sample of the batch get CROWN bounds from a backward pass restricted
  to them (one-hot spec rows), the others keep the reference bounds (detached); when no neuron is
  unstable nothing is recomputed, and when more than 90 % are, all of them get CROWN bounds. Inputs of
  other nonlinearities get full CROWN bounds. A Linear/Conv applied to the input (or to a reshape of
  it, e.g. after Flatten) uses IBP (exact for one affine map). Nodes whose bounds follow from an input
  with known bounds through activations/reshapes only take them by IBP. CROWN is never intersected with
  IBP. The final node gets a full backward pass with ``C``.
* ``"CROWN-IBP"`` = ``"IBP+backward"`` = ``"IBP+CROWN"``: all intermediate bounds by IBP, the final node by
  CROWN.
* ``"forward"``: forward-mode linear bounds through the graph, nonlinearities relaxed on the concretised
  forward bounds of their inputs; ``"forward+backward"``: forward intermediates, backward final node.
* ``"alpha-CROWN"`` = ``"CROWN-Optimized"``: CROWN intermediates, then the final bound optimised over the
  ReLU lower slopes (:mod:`lirpa.alpha_crown`; settings in ``bound_opts["optimize_bound_args"]``). Its
  bounds are detached (not differentiable w.r.t. the parameters).

Unrequested sides (``bound_lower=False`` / ``bound_upper=False``) are returned as ``None``. A NaN bound
(from ``0·inf`` with unbounded intermediate intervals) is returned as ``-inf`` (lower) / ``+inf`` (upper).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math

import torch
from torch import Tensor, nn

from certcore.allocator import keep_freed_memory
from certcore.bounds import Interval
from lirpa.alpha_crown import optimize_final_bound
from lirpa.bounded_tensor import BoundedTensor
from lirpa.graph import GraphNode, build_nodes, run_graph, trace
from lirpa.ops import LinearBound
from lirpa.ops.linear import Conv2d, Linear
from lirpa.ops.loss_fusion import LabelMargin
from lirpa.ops.patches import Patches, add_A, concretize_box, patches_backward, to_dense
from lirpa.ops.shape import Reshape
from lirpa.perturbations import PerturbationLpNorm

__all__ = ["BoundedModule", "NodeView", "DEFAULT_BOUND_OPTS"]

#: with ``crown_batch_size=inf``, one backward pass for intermediate bounds takes at most as many spec
#: rows as keep ``rows·batch·neurons`` below this: for dense coefficients ``neurons`` is the widest node
#: the pass crosses, for patches the node bounded. Bounds are unchanged; memory is capped, and dense
#: passes stay small enough (16 MB in float32) that the C allocator reuses their buffers instead of
#: mapping fresh pages for each one (first-touch page faults cost as much as the products here).
PASS_ELEMENTS = 2**22
#: the same cap for patches passes, counted as ``rows·batch·neurons`` of the node bounded (the patches
#: themselves are far smaller: ``rows·batch·C·kh·kw``); larger passes amortise the per-pass overhead.
PATCHES_PASS_ELEMENTS = 2**25
RELU_OPTIONS = ("adaptive", "same-slope", "zero-lb", "one-lb")
DEFAULT_OPTIMIZE_ARGS = {
    "iteration": 20,
    "lr_alpha": 0.5,
    "lr_decay": 0.98,
    "keep_best": True,
    "early_stop_patience": 10,
    "fix_interm_bounds": True,
    "init_alpha": True,
}
DEFAULT_BOUND_OPTS = {
    "conv_mode": "patches",
    "activation_bound_option": "adaptive",
    "sparse_intermediate_bounds": True,
    "minimum_sparsity": 0.9,
    "crown_batch_size": math.inf,
    "optimize_bound_args": DEFAULT_OPTIMIZE_ARGS,
}
METHODS = {
    "ibp": "ibp",
    "backward": "crown",
    "crown": "crown",
    "crown-ibp": "crown-ibp",
    "ibp+backward": "crown-ibp",
    "ibp+crown": "crown-ibp",
    "forward": "forward",
    "forward+backward": "forward+backward",
    "forward+crown": "forward+backward",
    "alpha-crown": "alpha-crown",
    "crown-optimized": "alpha-crown",
}


class NodeView:
    """What ``bm[name]`` returns: a node's name, module path / call site, kind and last bounds."""

    def __init__(self, node: GraphNode, box: Interval | None):
        self.name, self.path = node.name, node.path
        self.kind = "input" if node.op is None else node.op.kind
        self.lower = None if box is None else box.lower
        self.upper = None if box is None else box.upper

    def __repr__(self) -> str:
        has = "with bounds" if self.lower is not None else "no bounds computed"
        return f"NodeView({self.name!r}, path={self.path!r}, kind={self.kind!r}, {has})"


def _no_nan(t: Tensor | None, fill: float) -> Tensor | None:
    """NaN entries of a bound -> ``fill`` (-inf for a lower bound, +inf for an upper one): always sound."""
    return None if t is None else torch.nan_to_num(t, nan=fill, posinf=math.inf, neginf=-math.inf)


def _shapes(inputs: tuple) -> list:
    return [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in inputs]


@contextlib.contextmanager
def _frozen_running_stats(model: nn.Module):
    """Leave BatchNorm running statistics as they were: the clean pass of a bound computation is not
    a training step (the training loop's own ``model(x)`` updates them once per batch)."""
    saved = [
        (m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.running_mean is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, count in saved:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def _parse_method(method: str | None, ibp: bool, forward: bool) -> str:
    if method is None:
        if ibp:
            return "ibp"
        raise ValueError("method=None needs IBP=True (or give a method name)")
    if not isinstance(method, str) or method.strip().lower() not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)} (case-insensitive)")
    mode = METHODS[method.strip().lower()]
    if mode == "crown" and ibp:
        mode = "crown-ibp"
    elif mode == "crown" and forward:
        mode = "forward+backward"
    return mode


class BoundedModule(nn.Module):
    """``BoundedModule(model, example_input, bound_opts=None, device="auto")``.

    Traces ``model`` once (torch.fx); every operation on perturbed data must have a bound rule, else
    :class:`~lirpa.ops.UnsupportedOperationError`. The module holds ``model`` itself, so its parameters
    are the model's own ``nn.Parameter`` objects; ``bm(x)`` is ``model(x)``.
    """

    def __init__(self, model: nn.Module, example_input, bound_opts: dict | None = None, device="auto"):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.device = device
        self.bound_opts = copy.deepcopy(DEFAULT_BOUND_OPTS)
        self.set_bound_opts(bound_opts or {})
        self._graph = trace(model)
        example = self._as_inputs(example_input)
        self._example_shapes = _shapes(example)
        with torch.no_grad(), _frozen_running_stats(model):
            env = run_graph(self._graph, model, example)
        self._nodes, self._roots, self._output = build_nodes(self._graph, model, env)
        self._node = {n.name: n for n in self._nodes}
        self._by_path = {n.path: n.name for n in self._nodes if n.fx_node.op == "call_module"}
        self._bounds: dict[str, Interval] = {}
        self._last_inputs: tuple | None = None
        self._clean_key: tuple | None = None

    # --- public helpers --------------------------------------------------------------------------
    def forward(self, *x, **kwargs):
        return self.model(*x, **kwargs)

    def set_bound_opts(self, opts: dict) -> None:
        if not isinstance(opts, dict):
            raise TypeError(f"bound_opts must be a dict, got {type(opts).__name__}")
        """Update ``bound_opts`` (``optimize_bound_args`` is merged key by key); invalid options raise and
        leave the current ones unchanged."""
        new = dict(self.bound_opts)
        for key, value in opts.items():
            if key == "optimize_bound_args":
                new["optimize_bound_args"] = {**new["optimize_bound_args"], **value}
            else:
                new[key] = value
        mode = new["conv_mode"]
        if mode not in ("matrix", "patches"):
            raise ValueError(f"conv_mode must be 'patches' or 'matrix', got {mode!r}")
        if new["activation_bound_option"] not in RELU_OPTIONS:
            raise ValueError(
                f"activation_bound_option must be one of {RELU_OPTIONS}, "
                f"got {new['activation_bound_option']!r}"
            )
        self.bound_opts = new

    def node_names(self) -> list[str]:
        return [n.name for n in self._nodes]

    def __getitem__(self, name: str) -> NodeView:
        key = self._by_path.get(name, name)
        if key not in self._node:
            raise KeyError(
                f"no node {name!r}; nodes: {self.node_names()}; module paths: {sorted(self._by_path)}"
            )
        return NodeView(self._node[key], self._bounds.get(key))

    def intermediate_bounds(self) -> dict[str, Interval]:
        """The bounds computed by the last ``compute_bounds`` call, by node name."""
        return dict(self._bounds)

    def relu_preactivation_bounds(self) -> dict[str, Interval]:
        """Bounds of the input of every ReLU whose input bounds were computed, keyed by the ReLU's
        module path (or, for a functional ``relu``, its node name)."""
        out = {}
        for n in self._nodes:
            if n.op is not None and n.op.kind == "relu" and n.inputs[0] in self._bounds:
                key = n.path if n.fx_node.op == "call_module" else n.name
                out[key] = self._bounds[n.inputs[0]]
        return out

    # --- compute_bounds ------------------------------------------------------------------------------
    def compute_bounds(
        self,
        x=None,
        C: Tensor | None = None,
        method: str | None = "backward",
        IBP: bool = False,
        forward: bool = False,
        bound_lower: bool = True,
        bound_upper: bool = True,
        final_node_name: str | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Bounds ``(lb, ub)`` of the output (``(B, *out_shape)``) or of ``C·output`` (``(B, n_spec)``, ``C``
        of shape ``(B, n_spec, n_out)``) over the perturbation of ``x`` (a tuple of inputs, or one; None
        reuses the last). ``method``: see the module docstring. ``final_node_name`` bounds another node
        (a node name or module path) instead of the output. An unrequested side is None."""
        lb, ub = self._compute(x, C, method, IBP, forward, bound_lower, bound_upper, final_node_name)
        return _no_nan(lb, -math.inf), _no_nan(ub, math.inf)

    def _compute(self, x, C, method, IBP, forward, bound_lower, bound_upper, final_node_name):
        mode = _parse_method(method, IBP, forward)
        if not (bound_lower or bound_upper):
            raise ValueError("at least one of bound_lower and bound_upper must be True")
        self._prepare(x)
        if any(isinstance(v, Tensor) and v.device.type == "cpu" for v in self._last_inputs):
            keep_freed_memory()  # the bound passes allocate and free tens of MB at a time
        final = self._resolve_final(final_node_name)
        C = self._check_C(C, final)
        self._order = self._ancestors(final)
        if mode == "ibp":
            box = self._ibp_final(final, C)
            return (box.lower if bound_lower else None), (box.upper if bound_upper else None)
        if mode == "crown-ibp":
            for n in self._order[:-1]:
                self._ibp_node(n)
        elif mode in ("forward", "forward+backward"):
            lin = self._forward_all(final)
            if mode == "forward":
                return self._forward_final(final, lin, C, bound_lower, bound_upper)
        elif mode == "alpha-crown":
            with torch.no_grad():  # α-CROWN detaches them anyway: no autograd graph of every CROWN pass
                self._crown_intermediates(final)
        else:
            self._crown_intermediates(final)
        return self._backward_final(final, C, bound_lower, bound_upper, optimize=mode == "alpha-crown")

    # --- setup -----------------------------------------------------------------------------------------
    def _as_inputs(self, x) -> tuple:
        if isinstance(x, (tuple, list)):
            return tuple(x)
        return (x,)

    def _prepare(self, x) -> None:
        if x is None:
            if self._last_inputs is None:
                raise ValueError("x is None and no input was given to an earlier compute_bounds call")
            inputs = self._last_inputs
        else:
            inputs = self._as_inputs(x)
        self._last_inputs = inputs
        placeholders = [n for n in self._graph.nodes if n.op == "placeholder"]
        for i, ph in enumerate(placeholders):
            if ph.name in self._roots and not isinstance(inputs[i] if i < len(inputs) else None, Tensor):
                value = inputs[i] if i < len(inputs) else None
                raise TypeError(f"input {ph.target!r} must be a tensor, got {type(value).__name__}")
        plain = tuple(t.as_subclass(Tensor) if isinstance(t, BoundedTensor) else t for t in inputs)
        try:
            with _frozen_running_stats(self.model):
                no_grad = self._clean_values_without_grad()
                key = self._clean_pass_key(plain)
                reuse = self._reusable_clean_values(key, no_grad)
                self._clean_key = None  # set again only once this pass has succeeded
                self._env = run_graph(self._graph, self.model, plain, no_grad=no_grad, reuse=reuse)
                self._clean_key = key
        except RuntimeError as exc:
            raise ValueError(
                f"the model fails on the inputs of shapes {_shapes(plain)} ({exc}); BoundedModule was built "
                f"with inputs of shapes {self._example_shapes}: give inputs the model accepts"
            ) from exc
        self._bounds = {}
        self._ptb: dict[str, PerturbationLpNorm] = {}
        self._box: dict[str, tuple[Tensor, Tensor]] = {}
        self._lp: dict[str, tuple[Tensor, Tensor, float]] = {}
        for i, ph in enumerate(placeholders):
            if ph.name not in self._roots:
                continue
            value = inputs[i]
            ptb = getattr(value, "ptb", None) or PerturbationLpNorm(eps=0.0)
            x0 = self._env[ph.name]
            lower, upper = ptb.init(x0)
            self._ptb[ph.name], self._box[ph.name] = ptb, (lower, upper)
            self._bounds[ph.name] = Interval(lower, upper, check=False)
            lp = ptb.lp_center(x0)
            if lp is not None:
                self._lp[ph.name] = lp
        for n in self._nodes:
            if n.op is not None:
                n.op.options = self.bound_opts
                n.op.bind(self._env)

    def _clean_values_without_grad(self) -> set[str]:
        """Nodes of the clean forward pass whose values need no autograd history: the bound rules read
        only shapes and indices from input-dependent values, except BatchNorm in train mode (batch
        statistics of the clean input, differentiable). Parameter-derived constants keep their history."""
        keep: set[str] = set()
        batchnorms = ((n, getattr(n.op, "module", None)) for n in self._nodes)
        stack = [
            n.inputs[0]
            for n, m in batchnorms
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
        ]
        while stack:
            name = stack.pop()
            if name not in keep:
                keep.add(name)
                stack.extend(self._node[name].inputs)
        return {n.name for n in self._nodes if n.name not in keep}

    def _clean_pass_key(self, inputs: tuple) -> tuple:
        """Shapes, dtypes and devices of the inputs, parameters and buffers."""
        def signature(t: object) -> object:
            return (tuple(t.shape), t.dtype, t.device) if isinstance(t, Tensor) else ("value", id(t))

        state = itertools.chain(self.model.parameters(), self.model.buffers())
        return tuple(signature(t) for t in inputs), tuple(signature(t) for t in state)

    def _reusable_clean_values(self, key: tuple, no_grad: set[str]) -> dict[str, object] | None:
        """The last clean pass's values of the perturbed nodes, when this pass has the same key
        (:meth:`_clean_pass_key`) and no rule reads their numbers (no train-mode BatchNorm: every
        perturbed node is in ``no_grad``); else None. The rules read only shapes, dtypes and devices of
        perturbed nodes (constants come from perturbed data only through value-free calls such as
        ``x.size(0)``, see ``graph.build_nodes``), so the clean forward pass, a third of the cost of IBP
        on a CNN, runs once per input signature."""
        perturbed = {n.name for n in self._nodes if not n.is_root}
        if self._clean_key != key or not perturbed <= no_grad:
            return None
        return {name: self._env[name] for name in perturbed}

    def _resolve_final(self, name: str | None) -> GraphNode:
        if name is None:
            if self._output not in self._node:
                raise ValueError("the model's output does not depend on a perturbed input: nothing to bound")
            return self._node[self._output]
        key = self._by_path.get(name, name)
        if key not in self._node or self._node[key].is_root:
            raise KeyError(f"final_node_name {name!r} is not a bounded node; nodes: {self.node_names()}")
        return self._node[key]

    def _check_C(self, C: Tensor | None, final: GraphNode) -> Tensor | None:
        if C is None:
            return None
        value = self._env[final.name]
        batch, n_out = value.shape[0], value[0].numel()
        if not isinstance(C, Tensor) or C.dim() != 3 or C.shape[0] != batch or C.shape[2] != n_out:
            shape = tuple(C.shape) if isinstance(C, Tensor) else type(C).__name__
            raise ValueError(
                f"C must have shape (batch={batch}, n_spec, n_out={n_out}) for outputs of shape "
                f"{tuple(value.shape)}, got {shape}"
            )
        if not bool(torch.isfinite(C).all()):
            raise ValueError(f"C must be finite: it holds {int((~torch.isfinite(C)).sum())} NaN/Inf entries")
        return C.to(value.dtype)

    def _ancestors(self, final: GraphNode) -> list[GraphNode]:
        keep, stack = set(), [final.name]
        while stack:
            name = stack.pop()
            if name in keep:
                continue
            keep.add(name)
            stack.extend(self._node[name].inputs)
        return [n for n in self._nodes if n.name in keep]

    # --- IBP -------------------------------------------------------------------------------------------
    def _lp_for(self, n: GraphNode) -> tuple | None:
        if isinstance(n.op, (Linear, Conv2d)) and n.inputs[0] in self._lp:
            x0 = self._lp[n.inputs[0]][0]
            if (isinstance(n.op, Linear) and x0.dim() == 2) or (isinstance(n.op, Conv2d) and x0.dim() == 4):
                return self._lp[n.inputs[0]]
        return None

    def _ibp_apply(self, n: GraphNode, boxes: list[Interval]) -> Interval:
        lp = self._lp_for(n)
        merged = self._merged_margin_ibp(n)
        if merged is not None:
            return merged
        box = n.op.ibp(boxes, lp=lp) if lp is not None else n.op.ibp(boxes)
        if isinstance(n.op, Reshape) and n.inputs[0] in self._lp:
            x0, eps, q = self._lp[n.inputs[0]]
            self._lp[n.name] = (x0.reshape(x0.shape[0], *n.op.out_shape), eps, q)
        return box

    def _merged_margin_ibp(self, n: GraphNode) -> Interval | None:
        """Loss fusion: ``z - z.gather(1, y)`` right after a final Linear on a 2-D input is bounded with the
        margin merged into the layer (auto_LiRPA's ``_IBP_loss_fusion``); None when that does not apply."""
        if not isinstance(n.op, LabelMargin) or n.op.same is None:
            return None
        src = self._node[n.inputs[0]]
        if not isinstance(src.op, Linear) or src.op.weight.dim() != 2 or len(n.op.out_shape) != 1:
            return None
        box = self._bounds.get(src.inputs[0])
        if box is None or box.lower.dim() != 2:
            return None
        return n.op.merged_ibp(src.op, box)

    def _ibp_node(self, n: GraphNode, store: dict | None = None) -> Interval:
        """IBP bounds of ``n`` from the bounds known upstream; missing inputs are computed by IBP and
        stored in ``store`` (default: the module's bounds)."""
        store = self._bounds if store is None else store
        if n.name in self._bounds:
            return self._bounds[n.name]
        if n.name in store:
            return store[n.name]
        boxes = [self._ibp_node(self._node[i], store) for i in n.inputs]
        box = self._ibp_apply(n, boxes)
        store[n.name] = box
        return box

    def _ibp_final(self, final: GraphNode, C: Tensor | None) -> Interval:
        for n in self._order[:-1]:
            self._ibp_node(n)
        if C is not None and isinstance(final.op, Linear) and final.op.weight.dim() == 2:
            inp = self._bounds[final.inputs[0]]
            if inp.lower.dim() == 2:
                return final.op.merged_ibp(inp, C)
        box = self._ibp_node(final)
        if C is None:
            return box
        center = torch.einsum("bsk,bk->bs", C, box.center.reshape(box.shape[0], -1))
        radius = torch.einsum("bsk,bk->bs", C.abs(), box.radius.reshape(box.shape[0], -1))
        return Interval(center - radius, center + radius, check=False)

    # --- backward (CROWN) ---------------------------------------------------------------------------
    def _backward(
        self, start: GraphNode, A0: Tensor, lower: bool, upper: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        """Bounds of ``A0·start`` (``A0``: ``(spec, batch, *shape)``) -> ``(spec, batch)`` each."""
        lA = {start.name: A0} if lower else {}
        uA = {start.name: A0} if upper else {}
        lbias: Tensor | float = 0.0
        ubias: Tensor | float = 0.0
        order = self._ancestors(start)
        for n in reversed(order):
            if n.is_root or (n.name not in lA and n.name not in uA):
                continue
            a_l, a_u = lA.pop(n.name, None), uA.pop(n.name, None)
            # a linear op maps the lower and upper coefficients alike: the same tensor is mapped once
            shared = a_l is not None and a_l is a_u and not n.op.nonlinear
            if shared:
                a_u = None
            boxes = [self._bounds.get(i) for i in n.inputs] if n.op.nonlinear else []
            res = None
            if isinstance(a_l, Patches) or isinstance(a_u, Patches):
                res = patches_backward(n.op, a_l, a_u, boxes)
                if res is None:  # an op that needs the dense matrix
                    a_l, a_u = to_dense(a_l), to_dense(a_u)
            outs, lb, ub = res if res is not None else n.op.backward(a_l, a_u, boxes)
            if shared:
                outs, ub = [(al, al) for al, _ in outs], lb
            lbias, ubias = lbias + lb, ubias + ub
            for name, (al, au) in zip(n.inputs, outs, strict=True):
                if al is not None:
                    lA[name] = add_A(lA[name], al) if name in lA else al
                if au is not None:
                    uA[name] = add_A(uA[name], au) if name in uA else au
        lb_out = ub_out = None
        ref = A0.patches if isinstance(A0, Patches) else A0
        zero = torch.zeros(ref.shape[:2], dtype=ref.dtype, device=ref.device)
        if lower:
            lb_out = zero + lbias
            for name, A in lA.items():
                lb_out = lb_out + self._concretize(name, A, -1.0)
        if upper:
            ub_out = zero + ubias
            for name, A in uA.items():
                ub_out = ub_out + self._concretize(name, A, 1.0)
        return lb_out, ub_out

    def _concretize(self, name: str, A, sign: float) -> Tensor:
        ptb = self._ptb[name]
        if isinstance(A, Patches):
            if ptb.norm == math.inf:
                return concretize_box(A, self._box[name], sign)
            A = A.to_dense()
        return ptb.concretize(self._env[name], self._box[name], A, sign)

    def _needs_bounds(self, n: GraphNode, members: set[str]) -> bool:
        return any(self._node[u].op.nonlinear for u in n.users if u in members)

    def _crown_intermediates(self, final: GraphNode) -> None:
        members = {n.name for n in self._order}
        for n in self._order[:-1]:
            if n.is_root or n.name in self._bounds or not self._needs_bounds(n, members):
                continue
            self._crown_node(n, members)

    def _ibp_chain(self, n: GraphNode) -> bool:
        """Bounds by IBP when ``n`` follows a node with known bounds through IBP-exact ops only."""
        chain, cur = [], n
        while cur.name not in self._bounds:
            if cur.is_root or not cur.op.ibp_intermediate or len(cur.inputs) != 1:
                return False
            chain.append(cur)
            cur = self._node[cur.inputs[0]]
        for c in reversed(chain):
            self._bounds[c.name] = self._ibp_apply(c, [self._bounds[c.inputs[0]]])
        return True

    def _root_through_reshapes(self, name: str) -> str | None:
        """The input node ``name`` is (or is a reshape of), else None."""
        node = self._node[name]
        while not node.is_root:
            if not isinstance(node.op, Reshape) or len(node.inputs) != 1:
                return None
            node = self._node[node.inputs[0]]
        return node.name

    def _crown_node(self, n: GraphNode, members: set[str]) -> None:
        if self._ibp_chain(n):
            return
        root = self._root_through_reshapes(n.inputs[0]) if isinstance(n.op, (Linear, Conv2d)) else None
        if root is not None and (root not in self._lp or self._lp_for(n) is not None):
            self._bounds[n.name] = self._ibp_node(n)  # one affine map of the input: IBP is exact
            return
        value = self._env[n.name]
        batch, shape = value.shape[0], tuple(value.shape[1:])
        dim = math.prod(shape)
        first_user = next(self._node[u] for u in n.users if u in members)
        sparse = self.bound_opts.get("sparse_intermediate_bounds", True) and first_user.op.relu_like
        if sparse:
            with torch.no_grad():
                ref = self._ibp_node(n, store={})
            unstable = ((ref.lower < 0) & (ref.upper > 0)).reshape(batch, -1).any(0)
            count = int(unstable.sum())
            if count == 0:
                self._bounds[n.name] = Interval(ref.lower.detach(), ref.upper.detach(), check=False)
                return
            if count <= self.bound_opts.get("minimum_sparsity", 0.9) * dim:
                idx = unstable.nonzero().squeeze(1)
                lb, ub = self._backward_rows(n, idx)
                lower = ref.lower.detach().clone().reshape(batch, -1)
                upper = ref.upper.detach().clone().reshape(batch, -1)
                lower[:, idx] = lb.t()
                upper[:, idx] = ub.t()
                self._bounds[n.name] = Interval(
                    lower.reshape(value.shape), upper.reshape(value.shape), check=False
                )
                return
        lb, ub = self._backward_rows(n, torch.arange(dim, device=value.device))
        self._bounds[n.name] = Interval(lb.t().reshape(value.shape), ub.t().reshape(value.shape), check=False)

    def _backward_rows(self, n: GraphNode, rows: Tensor) -> tuple[Tensor, Tensor]:
        """CROWN bounds of the neurons ``rows`` (flat indices) of ``n`` -> ``(len(rows), batch)`` each, in
        chunks of ``bound_opts["crown_batch_size"]`` rows (one-hot spec rows per chunk)."""
        value = self._env[n.name]
        batch, shape = value.shape[0], tuple(value.shape[1:])
        dim = math.prod(shape)
        patches = self.bound_opts["conv_mode"] == "patches" and len(shape) == 3
        # y = W x + b on a 2-D x: the rows' coefficients on x are rows of W (no product with one-hot rows)
        dense_linear = isinstance(n.op, Linear) and value.dim() == 2 and self._env[n.inputs[0]].dim() == 2
        chunk = self.bound_opts.get("crown_batch_size", math.inf)
        if chunk == math.inf:
            if patches:
                chunk = max(1, PATCHES_PASS_ELEMENTS // max(1, batch * dim))
            else:
                width = max(math.prod(a.shape[1:]) for a in self._cone_values(n))
                chunk = max(1, PASS_ELEMENTS // max(1, batch * width))
        chunk = max(1, int(chunk))
        lbs, ubs = [], []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            k = len(part)
            if dense_linear:
                w = n.op.weight[part]
                A_in = w.unsqueeze(1).expand(k, batch, w.shape[1])
                lb, ub = self._backward(self._node[n.inputs[0]], A_in, True, True)
                if n.op.bias is not None:
                    lb, ub = lb + n.op.bias[part].unsqueeze(1), ub + n.op.bias[part].unsqueeze(1)
            else:
                if patches:
                    A0 = Patches.one_hot(part, batch, shape, value)
                else:
                    A0 = torch.zeros(k, batch, dim, dtype=value.dtype, device=value.device)
                    A0[torch.arange(k, device=value.device), :, part] = 1.0
                    A0 = A0.reshape(k, batch, *shape)
                lb, ub = self._backward(n, A0, True, True)
            lbs.append(lb)
            ubs.append(ub)
        return torch.cat(lbs), torch.cat(ubs)

    def _cone_values(self, n: GraphNode) -> list[Tensor]:
        """The clean values of ``n`` and its ancestors that are batched tensors (what a backward pass
        from ``n`` may hold coefficients of)."""
        batch = self._env[n.name].shape[0]
        values = (self._env.get(a.name) for a in self._ancestors(n))
        return [v for v in values if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == batch]

    def _backward_final(self, final: GraphNode, C, bound_lower: bool, bound_upper: bool, optimize=False):
        value = self._env[final.name]
        batch, shape = value.shape[0], tuple(value.shape[1:])
        if C is None:
            dim = math.prod(shape)
            eye = torch.eye(dim, dtype=value.dtype, device=value.device)
            A0 = eye.unsqueeze(1).expand(dim, batch, dim).reshape(dim, batch, *shape)
        else:
            A0 = C.transpose(0, 1).reshape(C.shape[1], batch, *shape)
        if optimize:
            lb, ub = optimize_final_bound(self, final, A0, bound_lower, bound_upper)
        else:
            lb, ub = self._backward(final, A0, bound_lower, bound_upper)
        out_shape = value.shape if C is None else (batch, C.shape[1])
        lb = None if lb is None else lb.t().reshape(out_shape)
        ub = None if ub is None else ub.t().reshape(out_shape)
        if C is None and lb is not None and ub is not None:
            self._bounds[final.name] = Interval(lb, ub, check=False)
        return lb, ub

    # --- forward mode ----------------------------------------------------------------------------
    def _forward_all(self, final: GraphNode) -> dict[str, LinearBound]:
        roots = [n for n in self._order if n.is_root]
        if len(roots) != 1:
            raise NotImplementedError("forward mode supports exactly one perturbed input")
        root = roots[0]
        x0 = self._env[root.name]
        batch, n_in = x0.shape[0], x0[0].numel()
        eye = torch.eye(n_in, dtype=x0.dtype, device=x0.device).reshape(1, n_in, *x0.shape[1:])
        zero = torch.zeros_like(x0)
        lin = {
            root.name: LinearBound(
                eye.expand(batch, *eye.shape[1:]), zero, eye.expand(batch, *eye.shape[1:]), zero
            )
        }
        for n in self._order:
            if n.is_root:
                continue
            if n.op.nonlinear:
                for i in n.inputs:
                    if i not in self._bounds:
                        self._bounds[i] = self._concretize_forward(root, lin[i])
            boxes = [self._bounds.get(i) for i in n.inputs] if n.op.nonlinear else []
            lin[n.name] = n.op.forward([lin[i] for i in n.inputs], boxes)
        return lin

    def _concretize_forward(self, root: GraphNode, lb_: LinearBound) -> Interval:
        ptb, x0, box = self._ptb[root.name], self._env[root.name], self._box[root.name]
        lower = ptb.concretize_forward(x0, box, lb_.lw, -1.0) + lb_.lb
        upper = ptb.concretize_forward(x0, box, lb_.uw, 1.0) + lb_.ub
        return Interval(lower, upper, check=False)

    def _forward_final(self, final: GraphNode, lin: dict, C, bound_lower: bool, bound_upper: bool):
        root = next(n for n in self._order if n.is_root)
        out = lin[final.name]
        if C is not None and isinstance(final.op, Linear) and lin[final.inputs[0]].lb.dim() == 2:
            out = final.op.merged_forward(lin[final.inputs[0]], C)
        elif C is not None:
            batch, n_in = out.lw.shape[:2]
            lw, uw = out.lw.reshape(batch, n_in, -1), out.uw.reshape(batch, n_in, -1)
            lb, ub = out.lb.reshape(batch, -1), out.ub.reshape(batch, -1)
            cp, cn = C.clamp(min=0), C.clamp(max=0)
            out = LinearBound(
                torch.einsum("bso,bno->bns", cp, lw) + torch.einsum("bso,bno->bns", cn, uw),
                torch.einsum("bso,bo->bs", cp, lb) + torch.einsum("bso,bo->bs", cn, ub),
                torch.einsum("bso,bno->bns", cp, uw) + torch.einsum("bso,bno->bns", cn, lw),
                torch.einsum("bso,bo->bs", cp, ub) + torch.einsum("bso,bo->bs", cn, lb),
            )
        box = self._concretize_forward(root, out)
        if C is None:
            self._bounds[final.name] = box
        return (box.lower if bound_lower else None), (box.upper if bound_upper else None)
