"""Registration of the ``certcore`` ops: schemas, fallback kernels, autograd and fake kernels.

Importing this module (``certcore.ops`` does) makes ``torch.ops.certcore.*`` complete on every
device, whatever was compiled:

1. ``certcore._C`` is imported; its ``TORCH_LIBRARY(certcore)`` defines the four schemas and its
   ``TORCH_LIBRARY_IMPL`` blocks add the CPU (and, when built with CUDA, the CUDA) kernels. If it
   cannot be imported, the same schemas are defined here from Python (``SCHEMAS`` must stay equal
   to ``csrc/certcore.cpp``; a test checks it).
2. The pure-PyTorch reference (``reference.py``) is registered as the ``CompositeExplicitAutograd``
   kernel of every op: the dispatcher uses it only on devices that have no compiled kernel, and it
   warns once per device type when it does.
3. Autograd (``torch.library.register_autograd``) and fake kernels (``register_fake``) are
   registered here, so autograd, ``torch.library.opcheck`` and ``torch.compile`` behave the same
   on every backend.

``CERTCORE_BACKEND`` (read once, at import): ``auto`` (default) as above; ``reference`` never
imports ``certcore._C`` and serves every op with the reference (no warning); ``compiled`` raises
when ``certcore._C`` cannot be imported.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from certcore import _backend
from certcore.ops import reference

NAMESPACE = "certcore"

# Must equal the m.def(...) strings of csrc/certcore.cpp.
SCHEMAS: dict[str, str] = {
    "norm_dist_forward": (
        "norm_dist_forward(Tensor x, Tensor w, float p, int groups, bool need_argmax) -> (Tensor, Tensor)"
    ),
    "norm_dist_backward": (
        "norm_dist_backward(Tensor grad_y, Tensor x, Tensor w, Tensor y, Tensor argmax, float p, "
        "int groups, bool[2] output_mask) -> (Tensor, Tensor)"
    ),
    "bound_inf_dist_forward": (
        "bound_inf_dist_forward(Tensor lower, Tensor upper, Tensor w, int groups) "
        "-> (Tensor, Tensor, Tensor, Tensor)"
    ),
    "bound_inf_dist_backward": (
        "bound_inf_dist_backward(Tensor grad_y_lower, Tensor grad_y_upper, Tensor arg_lower, "
        "Tensor arg_upper, Tensor w, int CI, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)"
    ),
}

# public op -> the schemas that serve it
OPS: dict[str, tuple[str, str]] = {
    "norm_dist": ("norm_dist_forward", "norm_dist_backward"),
    "bound_inf_dist": ("bound_inf_dist_forward", "bound_inf_dist_backward"),
}

_REFERENCE_KERNELS: dict[str, Callable] = {
    "norm_dist_forward": reference.norm_dist_forward,
    "norm_dist_backward": reference.norm_dist_backward,
    "bound_inf_dist_forward": reference.bound_inf_dist_forward,
    "bound_inf_dist_backward": reference.bound_inf_dist_backward,
}

_DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

MODE = os.environ.get("CERTCORE_BACKEND", "auto").strip().lower() or "auto"
if MODE not in {"auto", "reference", "compiled"}:
    raise ValueError(f"CERTCORE_BACKEND must be 'auto', 'reference' or 'compiled', got {MODE!r}")

C_IMPORT_ERROR: str | None = None
_compiled_loaded = False
if MODE != "reference":
    try:
        import certcore._C  # noqa: F401  (registers the schemas and the compiled kernels)

        _compiled_loaded = True
    except ImportError as exc:
        C_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
        if MODE == "compiled":
            raise ImportError(
                "CERTCORE_BACKEND=compiled but certcore._C cannot be imported "
                f"({C_IMPORT_ERROR}); rebuild with: pip install --no-build-isolation -e packages/certcore"
            ) from exc
else:
    _compiled_loaded = "certcore._C" in sys.modules


def _qualname(name: str) -> str:
    return f"{NAMESPACE}::{name}"


def _schema_defined(name: str) -> bool:
    try:
        getattr(getattr(torch.ops, NAMESPACE), name)
    except (AttributeError, RuntimeError):
        return False
    return True


_def_lib: torch.library.Library | None = None
if not all(_schema_defined(n) for n in SCHEMAS):
    _def_lib = torch.library.Library(NAMESPACE, "DEF")
    for _schema in SCHEMAS.values():
        _def_lib.define(_schema)

# (schema name, device type) -> a compiled kernel serves it
COMPILED: dict[tuple[str, str], bool] = {
    (name, dev): MODE != "reference" and torch._C._dispatch_has_kernel_for_dispatch_key(_qualname(name), key)
    for name in SCHEMAS
    for dev, key in _DEVICE_KEYS.items()
}


def _device_type(args: tuple) -> str:
    for a in args:
        if isinstance(a, Tensor):
            return a.device.type
    return "cpu"


def _fallback_reason(name: str, device_type: str) -> str:
    if C_IMPORT_ERROR is not None:
        return f"certcore._C could not be imported ({C_IMPORT_ERROR})"
    return f"certcore._C has no {device_type} kernel for {_qualname(name)}"


def _make_fallback(name: str, fn: Callable) -> Callable:
    def kernel(*args):
        if MODE != "reference":
            dev = _device_type(args)
            if not COMPILED.get((name, dev), False):
                _backend.warn_fallback_once(dev, _fallback_reason(name, dev))
        return fn(*args)

    kernel.__name__ = f"{name}_reference"
    return kernel


_impl_lib = torch.library.Library(NAMESPACE, "IMPL")
with warnings.catch_warnings():
    # Only in CERTCORE_BACKEND=reference after certcore._C was imported anyway: override its kernels.
    warnings.simplefilter("ignore")
    for _name, _fn in _REFERENCE_KERNELS.items():
        _kernel = _make_fallback(_name, _fn)
        _impl_lib.impl(_name, _kernel, "CompositeExplicitAutograd")
        if MODE == "reference" and _compiled_loaded:
            for _key in _DEVICE_KEYS.values():
                if torch._C._dispatch_has_kernel_for_dispatch_key(_qualname(_name), _key):
                    _impl_lib.impl(_name, _kernel, _key)

if MODE == "auto" and C_IMPORT_ERROR is not None:
    _backend.warn_fallback_once("cpu", _fallback_reason("norm_dist_forward", "cpu"))


# ---------------------------------------------------------------------------------------------
# Fake (meta) kernels: shapes, dtypes and devices only.


@torch.library.register_fake(_qualname("norm_dist_forward"))
def _norm_dist_forward_fake(x: Tensor, w: Tensor, p: float, groups: int, need_argmax: bool):
    B, _, HW = x.shape
    CO = w.shape[0]
    y = x.new_empty((B, CO, HW))
    arg_shape = (B, CO, HW) if (need_argmax and math.isinf(p)) else (0,)
    return y, x.new_empty(arg_shape, dtype=torch.int32)


@torch.library.register_fake(_qualname("norm_dist_backward"))
def _norm_dist_backward_fake(grad_y, x, w, y, argmax, p, groups, output_mask):
    gx = x.new_empty(x.shape) if output_mask[0] else x.new_empty((0,))
    gw = w.new_empty(w.shape) if output_mask[1] else w.new_empty((0,))
    return gx, gw


@torch.library.register_fake(_qualname("bound_inf_dist_forward"))
def _bound_inf_dist_forward_fake(lower: Tensor, upper: Tensor, w: Tensor, groups: int):
    B, _, HW = lower.shape
    shape = (B, w.shape[0], HW)
    return (
        lower.new_empty(shape),
        lower.new_empty(shape),
        lower.new_empty(shape, dtype=torch.int32),
        lower.new_empty(shape, dtype=torch.int32),
    )


@torch.library.register_fake(_qualname("bound_inf_dist_backward"))
def _bound_inf_dist_backward_fake(
    grad_y_lower, grad_y_upper, arg_lower, arg_upper, w, CI, groups, output_mask
):
    B, _, HW = grad_y_upper.shape
    out = []
    for want in output_mask[:2]:
        out.append(w.new_empty((B, CI, HW)) if want else w.new_empty((0,)))
    out.append(w.new_empty(w.shape) if output_mask[2] else w.new_empty((0,)))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Autograd: the backward ops are not themselves differentiable (no double backward).


def _norm_dist_setup_context(ctx, inputs, output) -> None:
    x, w, p, groups, _ = inputs
    y, argmax = output
    ctx.p, ctx.groups = p, groups
    ctx.save_for_backward(x, w, y, argmax)


def _norm_dist_backward(ctx, grad_y: Tensor, _grad_argmax):
    x, w, y, argmax = ctx.saved_tensors
    want_x, want_w = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
    if math.isinf(ctx.p) and argmax.numel() == 0 and y.numel() > 0:
        raise RuntimeError(
            "certcore::norm_dist_forward at p = inf was called with need_argmax=False, so it cannot be "
            "differentiated; use certcore.ops.norm_dist, which asks for the argmax when a gradient is needed"
        )
    gx, gw = torch.ops.certcore.norm_dist_backward(
        grad_y.contiguous(), x, w, y, argmax, ctx.p, ctx.groups, [want_x, want_w]
    )
    return (gx if want_x else None, gw if want_w else None, None, None, None)


torch.library.register_autograd(
    _qualname("norm_dist_forward"), _norm_dist_backward, setup_context=_norm_dist_setup_context
)


def _bound_setup_context(ctx, inputs, output) -> None:
    lower, _, w, groups = inputs
    _, _, arg_lower, arg_upper = output
    ctx.CI, ctx.groups = lower.shape[1], groups
    ctx.save_for_backward(arg_lower, arg_upper, w)


def _bound_backward(ctx, grad_y_lower: Tensor, grad_y_upper: Tensor, _ga, _gb):
    arg_lower, arg_upper, w = ctx.saved_tensors
    mask = [bool(m) for m in ctx.needs_input_grad[:3]]
    gl, gu, gw = torch.ops.certcore.bound_inf_dist_backward(
        grad_y_lower.contiguous(),
        grad_y_upper.contiguous(),
        arg_lower,
        arg_upper,
        w,
        ctx.CI,
        ctx.groups,
        mask,
    )
    return (gl if mask[0] else None, gu if mask[1] else None, gw if mask[2] else None, None)


torch.library.register_autograd(
    _qualname("bound_inf_dist_forward"), _bound_backward, setup_context=_bound_setup_context
)


# ---------------------------------------------------------------------------------------------


def describe(device: str | torch.device | None = None) -> dict[str, str]:
    """What serves each public op: see certcore.backend."""
    if device is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [torch.device(device).type]
    out = {}
    for op, names in OPS.items():
        parts = []
        for dev in devices:
            if all(COMPILED.get((n, dev), False) for n in names):
                parts.append(f"{dev} kernel")
            else:
                parts.append("reference" if len(devices) == 1 else f"reference on {dev}")
        out[op] = ", ".join(parts)
    return out
