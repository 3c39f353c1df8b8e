"""A deliberately naive dense reference for IBP, CROWN, CROWN-IBP and forward-mode LiRPA bounds.

This is a test oracle for ``lirpa``: it shares no code with ``lirpa`` or ``certcore.bounds`` and is
written to be read, not to be fast. Every affine layer becomes an explicit dense matrix, every bound
is computed in float64 with Python loops over the layers, and each method follows auto_LiRPA 0.7.1
(Verified-Intelligence/auto_LiRPA @ a050a3d) as read from its source; the deviations are listed below.

Scope: an ``nn.Sequential`` of ``Normalize`` (defined here), ``nn.Linear``, ``nn.Conv2d`` (any
stride / padding / padding_mode / dilation / groups), ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` in eval
mode, ``nn.Flatten``, ``nn.ReLU`` and ``nn.LeakyReLU`` (slope in [0, 1]).

API::

    layers = dense_layers(model, input_shape)   # [("affine", W, b) | ("relu",) | ("leaky_relu", a)]
    lb, ub = ibp(model, x_L, x_U, C)
    lb, ub = crown(model, x_L, x_U, C, relu_option="adaptive", ibp_intermediate=False)  # CROWN / CROWN-IBP
    lb, ub = forward_mode(model, x_L, x_U, C)
    bounds = pre_activation_bounds(model, x_L, x_U, method="crown")   # one (l, u) per ReLU layer
    # Lp balls (p = 2, 1, any p >= 1): pass x_L = x_U = None, norm=p, eps=..., x0=...

Inputs are ``(B, *input_shape)``; ``C`` is ``(B, n_spec, n_out)`` or None (identity); results are
float64 ``(B, n_spec)`` (``(B, n_out)`` without C, the output flattened).

Input sets and concretisation (auto_LiRPA ``PerturbationLpNorm.concretize``)
  * L∞ box [x_L, x_U] (or x0 ± eps): ``A·x + c`` over the box is ``A·mid ± |A|·rad`` with
    mid = (x_L + x_U)/2, rad = (x_U − x_L)/2.
  * Lp ball ‖x − x0‖_p ≤ eps: ``A·x0 ± eps·‖A_row‖_q`` with 1/p + 1/q = 1 (q = ∞ for p = 1).

Relaxation of ReLU / LeakyReLU(a) on [l, u] (auto_LiRPA ``BoundRelu._relu_upper_bound`` and
``_relu_lower_bound_init``, used for every neuron, stable or not)
  * l' = min(l, 0), u' = max(max(u, 0), l' + 1e-8); upper line: slope d = (u' − a·l')/(u' − l'),
    intercept −l'·d + a·l' (the chord through (l, a·l) and (u, u) for unstable neurons). For stable
    neurons this formula is slope 1 (l ≥ 0) or a (u ≤ 0) and intercept 0 up to one rounding; the
    oracle uses those exact values (auto_LiRPA keeps the rounded ones, so its "one-lb" test d > a on
    a LeakyReLU neuron with u ≤ 0 is decided by rounding noise; here it is always a).
  * lower line through 0 with slope k: "adaptive" k = 1 if d > 0.5 else a; "same-slope" k = d;
    "zero-lb" k = 1 if d >= 1 else a (auto_LiRPA's code, not its comment); "one-lb" k = 1 if
    d > a else a. For ReLU (a = 0) every option is exact on stable neurons. For LeakyReLU with
    a > 0.5 the "adaptive" rule gives a neuron with u ≤ 0 the lower slope 1, sound but not exact:
    this is what auto_LiRPA computes, and it is kept.
  * Backward pass: for the lower bound a positive coefficient takes the lower line and a negative one
    the upper line; for the upper bound the other way round.

IBP (``method="IBP"``; ``interval_bound.py``)
  * Interval arithmetic layer by layer: affine (mid, rad) -> (W·mid + b, |W|·rad); activations are
    monotone, applied to both ends.
  * With C: when the model's last module is an ``nn.Linear``, C is merged into it (W' = C·W,
    b' = C·b per sample) before the interval step; otherwise C is applied to the output box by
    interval arithmetic (auto_LiRPA merges only into a final ``BoundLinear``).
  * Lp inputs: the leading affine layers up to and including the first non-diagonal one (i.e. an
    optional Normalize / BatchNorm and the first Linear or Conv) are composed into one dense map
    (W, b) and bounded exactly, W·x0 + b ± eps·‖W_row‖_q; everything after that is interval
    arithmetic. For a model whose first module is an ``nn.Linear`` this is exactly auto_LiRPA
    (``BoundLinear.interval_propagate``, general-Lp branch). Where auto_LiRPA differs:
      - first ``nn.Conv2d``: auto_LiRPA uses eps·‖kernel[o]‖_2 for every output position and every p
        ("TODO: padding"); equal to ours for p = 2 when no receptive field is cut by padding, looser
        for p = 1 and at padded borders. This oracle uses the exact dual norm of each dense row;
      - a leading normalisation traced as Sub/Div: auto_LiRPA's ``BoundSub.interval_propagate``
        returns a plain tuple, so the Lp perturbation is lost and the interval has zero width
        (unsound). Here the normalisation is folded into the next Linear/Conv;
      - a model starting with an activation: auto_LiRPA again gets zero width; here the box x0 ± eps.
    Diagonal maps commute with interval arithmetic exactly, so for L∞ composing or not composing the
    leading Normalize/BatchNorm gives the same numbers.

CROWN (``method="backward"``, default bound_opts: ``sparse_intermediate_bounds`` and
``sparse_intermediate_bounds_with_ibp`` on, ``minimum_sparsity`` 0.9; ``bound_general.py``
``compute_intermediate_bounds`` / ``get_ref_intermediate_bounds``, ``backward_bound.py``
``get_sparse_C`` / ``get_unstable_locations`` / ``restore_sparse_bounds``)
  * The input of every activation layer k (its pre-activation) is bounded in order of k:
      1. reference: IBP of that node computed from the already-final bounds of the previous
         activation layer's input (through that activation and the affine layers between), or from
         the input set for the first activation layer. It is NOT a pure IBP pass from the input:
         ``IBP_general(node, delete_bounds_after_use=True)`` reuses the ``interval`` the earlier
         pre-activation nodes already carry, i.e. their final CROWN bounds.
      2. unstable set: neurons with ref_l < 0 < ref_u in ANY sample of the batch (the union over
         the batch, as ``get_unstable_locations`` merges it); m = its size, n = layer width.
      3. m = 0: the bounds are the reference. 0 < m <= minimum_sparsity·n ("sparse"): one backward
         pass from those m neurons, for every sample of the batch; their bounds become the CROWN
         bounds, all other neurons keep the reference. m > minimum_sparsity·n ("dense"): one
         backward pass from all n neurons, and every neuron takes the CROWN bound. CROWN and the
         reference are never intersected.
     The first layer's IBP shortcut (``check_IBP_first_linear``) is not modelled separately: for a
     single Linear/Conv on the input, IBP and CROWN are both exact and coincide.
  * The final node: one backward pass starting from Λ = C (or I), i.e. Λ·W_last at the last layer.
CROWN-IBP (``ibp_intermediate=True``): every pre-activation bound is the pure IBP bound from the
input (``IBP_general`` on the final node first), then the same final backward pass.

Forward mode (``method="forward"``; ``forward_bound.py``, ``BoundLinear.bound_forward``,
``BoundRelu.bound_forward``)
  * Linear forms over the flattened input: Lw·x + Lb <= h <= Uw·x + Ub, starting from I·x + 0.
    Affine: Lw' = W⁺Lw + W⁻Uw, Lb' = W⁺Lb + W⁻Ub + b (and symmetrically). Activation: its input
    bounds are the concretised forms (no IBP, no intersection); Lw' = k·Lw, Lb' = k·Lb,
    Uw' = d·Uw, Ub' = d·Ub + intercept, with the relaxation above.
  * C is merged into a final ``nn.Linear`` (as ``forward_general`` does for a final BoundLinear),
    else applied to the final forms with C⁺/C⁻; then the forms are concretised.
  * Deviation: auto_LiRPA's forward ReLU uses masks and gives a LeakyReLU neuron with u <= 0 the
    forms 0 <= y <= 0, which is unsound (y = a·x < 0); this oracle uses the relaxation above
    (slope a), which is sound.

Numerics: float64 throughout; the 1e-8 guard of the relaxation only matters for |l|, |u| < 1e-8.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RELU_OPTIONS",
    "Normalize",
    "crown",
    "dense_layers",
    "forward_mode",
    "ibp",
    "pre_activation_bounds",
]

RELU_OPTIONS = ("adaptive", "same-slope", "zero-lb", "one-lb")
_DTYPE = torch.float64

# A layer is ("affine", W, b) with W (out, in) and b (out,), ("relu",) or ("leaky_relu", slope).
# Inside this file an affine layer may also carry a per-sample W (B, out, in) and b (B, out): the
# last layer with a specification matrix C merged into it.
Layer = tuple


class Normalize(nn.Module):
    """``(x - mean) / std`` with ``mean`` and ``std`` as buffers broadcast against one sample."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.get_default_dtype()).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.get_default_dtype()).clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


# ----------------------------------------------------------------------------------------------
# Model -> dense layers
# ----------------------------------------------------------------------------------------------


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _output_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    probe = copy.deepcopy(module).to(_DTYPE)
    with torch.no_grad():
        out = probe(torch.zeros((1, *shape), dtype=_DTYPE))
    return tuple(out.shape[1:])


def _linear_layer(module: nn.Linear, shape: tuple[int, ...], index: int) -> Layer:
    if len(shape) != 1:
        raise ValueError(
            f"dense_layers: nn.Linear at index {index} gets input of shape {shape}; "
            "only flat (features,) inputs are supported (add nn.Flatten before it)"
        )
    W = module.weight.detach().to(_DTYPE).clone()
    if module.bias is None:
        b = torch.zeros(W.shape[0], dtype=_DTYPE)
    else:
        b = module.bias.detach().to(_DTYPE).clone()
    return ("affine", W, b)


def _conv_layer(module: nn.Conv2d, shape: tuple[int, ...]) -> Layer:
    # Dense matrix of the linear part: apply the bias-free conv to every identity basis vector.
    n_in = _numel(shape)
    conv = copy.deepcopy(module).to(_DTYPE)
    conv.bias = None
    basis = torch.eye(n_in, dtype=_DTYPE).reshape(n_in, *shape)
    with torch.no_grad():
        columns = conv(basis)  # (n_in, C_out, H_out, W_out): column j of W is conv(e_j)
    out_shape = tuple(columns.shape[1:])
    W = columns.reshape(n_in, -1).t().contiguous()
    if module.bias is None:
        b = torch.zeros(W.shape[0], dtype=_DTYPE)
    else:
        bias = module.bias.detach().to(_DTYPE)
        b = bias.reshape(-1, 1, 1).expand(out_shape).reshape(-1).clone()
    return ("affine", W, b)


def _batchnorm_layer(module: nn.modules.batchnorm._BatchNorm, shape: tuple[int, ...], index: int) -> Layer:
    name = type(module).__name__
    if module.training:
        raise ValueError(f"dense_layers: {name} at index {index} is in training mode; call model.eval()")
    if module.running_mean is None or module.running_var is None:
        raise ValueError(
            f"dense_layers: {name} at index {index} has no running statistics "
            "(track_running_stats=False), so it is not an affine map in eval mode"
        )
    channels = shape[0]
    mean = module.running_mean.detach().to(_DTYPE)
    var = module.running_var.detach().to(_DTYPE)
    weight = (
        torch.ones(channels, dtype=_DTYPE) if module.weight is None else module.weight.detach().to(_DTYPE)
    )
    bias = torch.zeros(channels, dtype=_DTYPE) if module.bias is None else module.bias.detach().to(_DTYPE)
    scale = weight / torch.sqrt(var + module.eps)
    shift = bias - mean * scale
    view = (channels,) + (1,) * (len(shape) - 1)
    scale_full = scale.reshape(view).expand(shape).reshape(-1)
    shift_full = shift.reshape(view).expand(shape).reshape(-1)
    return ("affine", torch.diag(scale_full), shift_full.clone())


def _normalize_layer(module: Normalize, shape: tuple[int, ...], index: int) -> Layer:
    mean = module.mean.detach().to(_DTYPE)
    std = module.std.detach().to(_DTYPE)
    if torch.broadcast_shapes(mean.shape, std.shape, shape) != torch.Size(shape):
        raise ValueError(
            f"dense_layers: Normalize at index {index}: mean {tuple(mean.shape)} / std {tuple(std.shape)} "
            f"do not broadcast to the sample shape {shape}"
        )
    inv_std = (1.0 / std).expand(shape).reshape(-1)
    shift = (-mean / std).expand(shape).reshape(-1)
    return ("affine", torch.diag(inv_std), shift.clone())


def dense_layers(model: nn.Sequential, input_shape: tuple[int, ...]) -> list[Layer]:
    """The model as a list of dense layers acting on flattened float64 vectors.

    ``("affine", W, b)`` maps x to W @ x + b (W: (out, in)); ``("relu",)``; ``("leaky_relu", a)``.
    ``nn.Flatten`` disappears (the vectors are already flat, in row-major order).
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"dense_layers: expected an nn.Sequential, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    layers: list[Layer] = []
    for index, module in enumerate(model):
        if isinstance(module, nn.Linear):
            layers.append(_linear_layer(module, shape, index))
        elif isinstance(module, nn.Conv2d):
            if len(shape) != 3:
                raise ValueError(
                    f"dense_layers: nn.Conv2d at index {index} needs (C, H, W) input, got {shape}"
                )
            layers.append(_conv_layer(module, shape))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            layers.append(_batchnorm_layer(module, shape, index))
        elif isinstance(module, Normalize):
            layers.append(_normalize_layer(module, shape, index))
        elif isinstance(module, nn.Flatten):
            pass
        elif isinstance(module, nn.ReLU):
            layers.append(("relu",))
        elif isinstance(module, nn.LeakyReLU):
            slope = float(module.negative_slope)
            if not 0.0 <= slope <= 1.0:
                raise ValueError(
                    f"dense_layers: LeakyReLU at index {index} has slope {slope}; need 0 <= a <= 1"
                )
            layers.append(("leaky_relu", slope))
        else:
            raise TypeError(
                f"dense_layers: unsupported module {type(module).__name__} at index {index}; supported: "
                "Normalize, Linear, Conv2d, BatchNorm1d/2d (eval), Flatten, ReLU, LeakyReLU"
            )
        shape = _output_shape(module, shape)
    return layers


# ----------------------------------------------------------------------------------------------
# Input sets
# ----------------------------------------------------------------------------------------------


class _InputSet:
    """The flattened input region: an L∞ box (center, radius) or an Lp ball (x0, eps, dual q)."""

    def __init__(self, x_L, x_U, norm, eps, x0):
        norm = float(norm)
        if norm == math.inf:
            if x_L is None and x_U is None:
                if x0 is None or eps is None:
                    raise ValueError("L∞ input needs x_L and x_U, or x0 and eps")
                x0 = torch.as_tensor(x0).to(_DTYPE)
                x_L, x_U = x0 - float(eps), x0 + float(eps)
            elif x_L is None or x_U is None:
                raise ValueError("pass both x_L and x_U")
            x_L = torch.as_tensor(x_L).detach().to(_DTYPE)
            x_U = torch.as_tensor(x_U).detach().to(_DTYPE)
            if x_L.shape != x_U.shape or x_L.dim() < 2:
                raise ValueError(
                    f"x_L {tuple(x_L.shape)} and x_U {tuple(x_U.shape)} must be the same (B, *shape)"
                )
            if bool((x_L > x_U).any()):
                raise ValueError("x_L must be <= x_U elementwise")
            self.norm = math.inf
            self.batch = x_L.shape[0]
            self.sample_shape = tuple(x_L.shape[1:])
            lo = x_L.reshape(self.batch, -1)
            hi = x_U.reshape(self.batch, -1)
            self.center = (hi + lo) / 2.0
            self.radius = (hi - lo) / 2.0
            self.lo, self.hi = lo, hi
        else:
            if not norm >= 1.0:
                raise ValueError(f"norm must be >= 1 (or inf), got {norm}")
            if x0 is None or eps is None:
                raise ValueError(f"an L{norm:g} ball needs x0 and eps")
            eps = float(eps)
            if not (eps >= 0.0 and math.isfinite(eps)):
                raise ValueError(f"eps must be finite and >= 0, got {eps}")
            x0 = torch.as_tensor(x0).detach().to(_DTYPE)
            if x0.dim() < 2:
                raise ValueError(f"x0 must be (B, *input_shape), got {tuple(x0.shape)}")
            self.norm = norm
            self.dual = math.inf if norm == 1.0 else norm / (norm - 1.0)
            self.eps = eps
            self.batch = x0.shape[0]
            self.sample_shape = tuple(x0.shape[1:])
            self.x0 = x0.reshape(self.batch, -1)
            # The L∞ box enclosing the ball (only used where nothing better exists).
            self.lo, self.hi = self.x0 - eps, self.x0 + eps

    def concretize(self, A: Tensor, sign: int) -> Tensor:
        """min (sign=-1) or max (sign=+1) of A[b, s, :] · x over the input set, shape (B, S)."""
        if self.norm == math.inf:
            mid = torch.einsum("bsn,bn->bs", A, self.center)
            dev = torch.einsum("bsn,bn->bs", A.abs(), self.radius)
        else:
            mid = torch.einsum("bsn,bn->bs", A, self.x0)
            dev = self.eps * torch.linalg.vector_norm(A, ord=self.dual, dim=-1)
        return mid + sign * dev


# ----------------------------------------------------------------------------------------------
# Small helpers on layers
# ----------------------------------------------------------------------------------------------


def _is_affine(layer: Layer) -> bool:
    return layer[0] == "affine"


def _slope(layer: Layer) -> float:
    return 0.0 if layer[0] == "relu" else float(layer[1])


def _apply_matrix(W: Tensor, v: Tensor) -> Tensor:
    """W @ v per sample: W (out, in) or (B, out, in); v (B, in) -> (B, out)."""
    if W.dim() == 2:
        return v @ W.t()
    return torch.einsum("boi,bi->bo", W, v)


def _times_matrix(A: Tensor, W: Tensor) -> Tensor:
    """A @ W per sample: A (B, S, out); W (out, in) or (B, out, in) -> (B, S, in)."""
    if W.dim() == 2:
        return A @ W
    return torch.einsum("bso,boi->bsi", A, W)


def _activation(layer: Layer, v: Tensor) -> Tensor:
    if layer[0] == "relu":
        return torch.relu(v)
    return F.leaky_relu(v, negative_slope=layer[1])


def _is_diagonal(W: Tensor) -> bool:
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        return False
    return bool((W - torch.diag(torch.diagonal(W)) == 0).all())


def _layers_with_merged_C(model: nn.Sequential, layers: list[Layer], C: Tensor | None):
    """(layers, C_left): C merged into a final nn.Linear when there is one, else returned to apply."""
    if C is None:
        return layers, None
    if isinstance(model[-1], nn.Linear):
        _, W, b = layers[-1]
        merged = ("affine", C @ W, torch.einsum("bso,o->bs", C, b))
        return layers[:-1] + [merged], None
    return layers, C


def _check_C(C, batch: int, n_out: int) -> Tensor | None:
    if C is None:
        return None
    C = torch.as_tensor(C).detach().to(_DTYPE)
    if C.dim() != 3 or C.shape[0] != batch or C.shape[2] != n_out:
        raise ValueError(f"C must have shape (B={batch}, n_spec, n_out={n_out}), got {tuple(C.shape)}")
    return C


def _check_relu_option(relu_option: str) -> None:
    if relu_option not in RELU_OPTIONS:
        raise ValueError(f"relu_option must be one of {RELU_OPTIONS}, got {relu_option!r}")


def _prepare(model, x_L, x_U, norm, eps, x0):
    inp = _InputSet(x_L, x_U, norm, eps, x0)
    layers = dense_layers(model, inp.sample_shape)
    return inp, layers


def _width(layers: list[Layer], inp: _InputSet) -> int:
    n = _numel(inp.sample_shape)
    for layer in layers:
        if _is_affine(layer):
            n = layer[1].shape[-2]
    return n


# ----------------------------------------------------------------------------------------------
# Relaxation
# ----------------------------------------------------------------------------------------------


def _relaxation(layer: Layer, lower: Tensor, upper: Tensor, relu_option: str):
    """(upper slope d, upper intercept, lower slope k) per neuron; the lower intercept is 0."""
    a = _slope(layer)
    l_r = lower.clamp(max=0.0)
    u_r = upper.clamp(min=0.0)
    u_r = torch.maximum(u_r, l_r + 1e-8)
    d = (u_r - a * l_r) / (u_r - l_r)
    intercept = -l_r * d + a * l_r
    # Stable neurons: the formula gives slope 1 / a and intercept 0 up to one rounding; use the exact
    # values so that the option rules below ("one-lb": d > a) do not decide on rounding noise.
    active = lower >= 0
    inactive = (upper <= 0) & ~active
    d = torch.where(active, torch.ones_like(d), torch.where(inactive, torch.full_like(d, a), d))
    intercept = torch.where(active | inactive, torch.zeros_like(intercept), intercept)
    one = torch.ones_like(d)
    alpha = torch.full_like(d, a)
    if relu_option == "adaptive":
        k = torch.where(d > 0.5, one, alpha)
    elif relu_option == "same-slope":
        k = d.clone()
    elif relu_option == "zero-lb":
        k = torch.where(d >= 1.0, one, alpha)
    elif relu_option == "one-lb":
        k = torch.where(d > a, one, alpha)
    else:
        raise ValueError(f"relu_option must be one of {RELU_OPTIONS}, got {relu_option!r}")
    return d, intercept, k


# ----------------------------------------------------------------------------------------------
# IBP
# ----------------------------------------------------------------------------------------------


def _interval_segment(layers: list[Layer], lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Plain interval arithmetic through ``layers`` from the box [lo, hi] (each (B, n))."""
    for layer in layers:
        if _is_affine(layer):
            _, W, b = layer
            mid = (hi + lo) / 2.0
            rad = (hi - lo) / 2.0
            center = _apply_matrix(W, mid) + b
            dev = _apply_matrix(W.abs(), rad)
            lo, hi = center - dev, center + dev
        else:
            lo, hi = _activation(layer, lo), _activation(layer, hi)
    return lo, hi


def _ibp_from_input(layers: list[Layer], inp: _InputSet) -> tuple[Tensor, Tensor]:
    """IBP bounds of the output of ``layers`` over the input set (Lp: see the module docstring)."""
    if inp.norm == math.inf:
        return _interval_segment(layers, inp.lo, inp.hi)
    # Lp: compose the leading affine layers up to and including the first non-diagonal one.
    n = inp.x0.shape[1]
    W = torch.eye(n, dtype=_DTYPE)
    b = torch.zeros(n, dtype=_DTYPE)
    start = 0
    while start < len(layers) and _is_affine(layers[start]):
        _, Wj, bj = layers[start]
        if W.dim() == 2 and Wj.dim() == 2:
            W, b = Wj @ W, Wj @ b + bj
        else:  # the last layer with C merged: per-sample matrices
            W = Wj @ W if W.dim() == 2 else torch.einsum("boi,bin->bon", Wj, W)
            b = (torch.einsum("boi,i->bo", Wj, b) if b.dim() == 1 else torch.einsum("boi,bi->bo", Wj, b)) + bj
        start += 1
        if not _is_diagonal(Wj):
            break
    if start == 0:
        lo, hi = inp.lo, inp.hi
    else:
        center = _apply_matrix(W, inp.x0) + b
        dev = inp.eps * torch.linalg.vector_norm(W, ord=inp.dual, dim=-1)
        if dev.dim() == 1:
            dev = dev.expand_as(center)
        lo, hi = center - dev, center + dev
    return _interval_segment(layers[start:], lo, hi)


def ibp(model, x_L, x_U, C=None, *, norm=math.inf, eps=None, x0=None) -> tuple[Tensor, Tensor]:
    """IBP bounds of ``C @ model(x)`` (or ``model(x)``), with C merged into a final nn.Linear."""
    inp, layers = _prepare(model, x_L, x_U, norm, eps, x0)
    C = _check_C(C, inp.batch, _width(layers, inp))
    layers, C_left = _layers_with_merged_C(model, layers, C)
    lo, hi = _ibp_from_input(layers, inp)
    if C_left is not None:
        lo, hi = _interval_segment([("affine", C_left, torch.zeros(C_left.shape[:2], dtype=_DTYPE))], lo, hi)
    return lo, hi


# ----------------------------------------------------------------------------------------------
# CROWN / CROWN-IBP
# ----------------------------------------------------------------------------------------------


def _backward(layers, pre_bounds, end, Lam, inp, relu_option):
    """Bound ``Lam @ h_end`` where h_end is the output of ``layers[:end]``; Lam is (B, S, n_end).

    Returns (lb, ub, (A_L, c_L, A_U, c_U)): h-space bounds A_L·x + c_L <= Lam·h_end <= A_U·x + c_U.
    ``pre_bounds[j]`` holds the (lower, upper) bounds of the input of activation layer j.
    """
    batch, specs = Lam.shape[0], Lam.shape[1]
    A_L = Lam.clone()
    A_U = Lam.clone()
    c_L = torch.zeros(batch, specs, dtype=_DTYPE)
    c_U = torch.zeros(batch, specs, dtype=_DTYPE)
    for j in reversed(range(end)):
        layer = layers[j]
        if _is_affine(layer):
            _, W, b = layer
            c_L = c_L + _apply_bias(A_L, b)
            c_U = c_U + _apply_bias(A_U, b)
            A_L = _times_matrix(A_L, W)
            A_U = _times_matrix(A_U, W)
        else:
            lower, upper = pre_bounds[j]
            d, intercept, k = _relaxation(layer, lower, upper, relu_option)
            d, intercept, k = d[:, None, :], intercept[:, None, :], k[:, None, :]
            # Lower bound: positive coefficients take the lower line, negative ones the upper line.
            pos, neg = A_L.clamp(min=0.0), A_L.clamp(max=0.0)
            c_L = c_L + (neg * intercept).sum(-1)
            A_L = pos * k + neg * d
            # Upper bound: positive coefficients take the upper line, negative ones the lower line.
            pos, neg = A_U.clamp(min=0.0), A_U.clamp(max=0.0)
            c_U = c_U + (pos * intercept).sum(-1)
            A_U = pos * d + neg * k
    lb = c_L + inp.concretize(A_L, -1)
    ub = c_U + inp.concretize(A_U, +1)
    return lb, ub, (A_L, c_L, A_U, c_U)


def _apply_bias(A: Tensor, b: Tensor) -> Tensor:
    """A @ b per sample: A (B, S, out), b (out,) or (B, out) -> (B, S)."""
    if b.dim() == 1:
        return A @ b
    return torch.einsum("bso,bo->bs", A, b)


def _crown_pre_bounds(layers, inp, relu_option, ibp_intermediate, minimum_sparsity):
    """{k: (lower, upper)} for the input of every activation layer k (see the module docstring)."""
    pre: dict[int, tuple[Tensor, Tensor]] = {}
    previous = None  # index of the last activation layer already bounded
    for k, layer in enumerate(layers):
        if _is_affine(layer):
            continue
        if ibp_intermediate:
            pre[k] = _ibp_from_input(layers[:k], inp)
            previous = k
            continue
        if previous is None:
            ref_lo, ref_hi = _ibp_from_input(layers[:k], inp)
        else:
            ref_lo, ref_hi = _interval_segment(layers[previous:k], *pre[previous])
        width = ref_lo.shape[1]
        unstable = ((ref_lo < 0) & (ref_hi > 0)).any(dim=0)  # union over the batch
        idx = torch.nonzero(unstable).flatten()
        m = int(idx.numel())
        if m == 0:
            lo, hi = ref_lo, ref_hi
        elif m <= minimum_sparsity * width:
            selector = torch.eye(width, dtype=_DTYPE)[idx].unsqueeze(0).expand(inp.batch, m, width)
            new_lo, new_hi, _ = _backward(layers, pre, k, selector, inp, relu_option)
            lo, hi = ref_lo.clone(), ref_hi.clone()
            lo[:, idx] = new_lo
            hi[:, idx] = new_hi
        else:
            identity = torch.eye(width, dtype=_DTYPE).unsqueeze(0).expand(inp.batch, width, width)
            lo, hi, _ = _backward(layers, pre, k, identity, inp, relu_option)
        pre[k] = (lo, hi)
        previous = k
    return pre


def crown(
    model,
    x_L,
    x_U,
    C=None,
    *,
    relu_option: str = "adaptive",
    ibp_intermediate: bool = False,
    norm=math.inf,
    eps=None,
    x0=None,
    minimum_sparsity: float = 0.9,
) -> tuple[Tensor, Tensor]:
    """CROWN (``ibp_intermediate=False``) or CROWN-IBP bounds of ``C @ model(x)``."""
    _check_relu_option(relu_option)
    inp, layers = _prepare(model, x_L, x_U, norm, eps, x0)
    n_out = _width(layers, inp)
    C = _check_C(C, inp.batch, n_out)
    pre = _crown_pre_bounds(layers, inp, relu_option, ibp_intermediate, minimum_sparsity)
    if C is None:
        C = torch.eye(n_out, dtype=_DTYPE).unsqueeze(0).expand(inp.batch, n_out, n_out)
    lb, ub, _ = _backward(layers, pre, len(layers), C, inp, relu_option)
    return lb, ub


# ----------------------------------------------------------------------------------------------
# Forward mode
# ----------------------------------------------------------------------------------------------


def _forward_affine(W, b, Lw, Lb, Uw, Ub):
    Wp, Wn = W.clamp(min=0.0), W.clamp(max=0.0)
    if W.dim() == 2:
        new_Lw = Wp @ Lw + Wn @ Uw
        new_Uw = Wp @ Uw + Wn @ Lw
    else:
        new_Lw = torch.einsum("boi,bin->bon", Wp, Lw) + torch.einsum("boi,bin->bon", Wn, Uw)
        new_Uw = torch.einsum("boi,bin->bon", Wp, Uw) + torch.einsum("boi,bin->bon", Wn, Lw)
    new_Lb = _apply_matrix(Wp, Lb) + _apply_matrix(Wn, Ub) + b
    new_Ub = _apply_matrix(Wp, Ub) + _apply_matrix(Wn, Lb) + b
    return new_Lw, new_Lb, new_Uw, new_Ub


def _forward_pass(layers, inp, relu_option, C_left=None):
    """Forward forms; returns (lb, ub, {k: pre-activation bounds})."""
    n = inp.lo.shape[1]
    Lw = torch.eye(n, dtype=_DTYPE).unsqueeze(0).repeat(inp.batch, 1, 1)  # (B, n_h, n_in)
    Uw = Lw.clone()
    Lb = torch.zeros(inp.batch, n, dtype=_DTYPE)
    Ub = torch.zeros(inp.batch, n, dtype=_DTYPE)
    pre = {}
    for k, layer in enumerate(layers):
        if _is_affine(layer):
            _, W, b = layer
            Lw, Lb, Uw, Ub = _forward_affine(W, b, Lw, Lb, Uw, Ub)
        else:
            lower = Lb + inp.concretize(Lw, -1)
            upper = Ub + inp.concretize(Uw, +1)
            pre[k] = (lower, upper)
            d, intercept, slope = _relaxation(layer, lower, upper, relu_option)
            Lw = slope[:, :, None] * Lw
            Lb = slope * Lb
            Uw = d[:, :, None] * Uw
            Ub = d * Ub + intercept
    if C_left is not None:
        zero = torch.zeros(C_left.shape[:2], dtype=_DTYPE)
        Lw, Lb, Uw, Ub = _forward_affine(C_left, zero, Lw, Lb, Uw, Ub)
    lb = Lb + inp.concretize(Lw, -1)
    ub = Ub + inp.concretize(Uw, +1)
    return lb, ub, pre


def forward_mode(
    model, x_L, x_U, C=None, *, relu_option: str = "adaptive", norm=math.inf, eps=None, x0=None
) -> tuple[Tensor, Tensor]:
    """Forward-mode LiRPA bounds of ``C @ model(x)`` (C merged into a final nn.Linear)."""
    _check_relu_option(relu_option)
    inp, layers = _prepare(model, x_L, x_U, norm, eps, x0)
    C = _check_C(C, inp.batch, _width(layers, inp))
    layers, C_left = _layers_with_merged_C(model, layers, C)
    lb, ub, _ = _forward_pass(layers, inp, relu_option, C_left)
    return lb, ub


# ----------------------------------------------------------------------------------------------
# Intermediate bounds
# ----------------------------------------------------------------------------------------------


def pre_activation_bounds(
    model,
    x_L,
    x_U,
    *,
    method: str = "crown",
    relu_option: str = "adaptive",
    norm=math.inf,
    eps=None,
    x0=None,
    minimum_sparsity: float = 0.9,
) -> list[tuple[Tensor, Tensor]]:
    """The bounds each method uses on the input of every activation layer, in model order:
    ``method`` is "ibp", "crown", "crown-ibp" or "forward". Each entry is ((B, n), (B, n)) float64."""
    _check_relu_option(relu_option)
    inp, layers = _prepare(model, x_L, x_U, norm, eps, x0)
    key = method.lower()
    if key == "ibp":
        pre = {k: _ibp_from_input(layers[:k], inp) for k, layer in enumerate(layers) if not _is_affine(layer)}
    elif key in ("crown", "crown-ibp"):
        pre = _crown_pre_bounds(layers, inp, relu_option, key == "crown-ibp", minimum_sparsity)
    elif key == "forward":
        _, _, pre = _forward_pass(layers, inp, relu_option)
    else:
        raise ValueError(f"method must be 'ibp', 'crown', 'crown-ibp' or 'forward', got {method!r}")
    return [pre[k] for k in sorted(pre)]
