"""Interval bound propagation through ``nn.Sequential`` trees of supported layers.

    >>> box = Interval.from_eps(x, eps, data_min=0.0, data_max=1.0)
    >>> out = ibp(model, box)                           # eval mode: running BatchNorm statistics
    >>> out = ibp(model, box, clean=x)                  # train mode: clean-batch BatchNorm statistics
    >>> out, logits = ibp(model, box, clean=x, return_clean=True)   # one pass for bounds and logits

Supported: ``Sequential`` (nested), :class:`Residual` (``block(x) + shortcut(x)``), ``Linear``,
``Conv1d/2d/3d`` (any stride, padding, padding mode, dilation, groups), ``BatchNorm1d/2d/3d`` (train and
eval), ``ReLU``, ``ReLU6``, ``LeakyReLU``, ``Hardtanh``, ``Tanh``, ``Sigmoid``, ``ELU``, ``Softplus``,
``Flatten``, ``Unflatten``, ``Identity``, ``Dropout`` (eval mode), ``AvgPool``/``AdaptiveAvgPool``,
``MaxPool``/``AdaptiveMaxPool`` (1-3 d).

Extension: a module with a method ``interval_forward(self, box) -> Interval`` (optionally taking a
``clean=`` keyword, the module's clean input) is used as-is, whatever its type; or register a rule for a
type with :func:`register_rule`. A subclass of a supported layer that overrides ``forward`` is *not*
treated as its base class (its forward may differ); neither is a module with forward hooks. Anything
else raises :class:`UnsupportedModuleError` naming the module's path, e.g. ``features.3 (GELU)``.

With ``clean`` given, the clean batch goes through each module's own forward alongside the box (so a
train-mode BatchNorm updates its running statistics once, exactly as ``model(clean)`` would; use
``return_clean=True`` instead of a second ``model(x)`` call).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds.interval import Interval
from certcore.bounds.rules import (
    interval_add,
    interval_avgpool,
    interval_batchnorm,
    interval_conv2d,
    interval_flatten,
    interval_leaky_relu,
    interval_linear,
    interval_maxpool,
    interval_monotone,
)

__all__ = ["Residual", "UnsupportedModuleError", "ibp", "register_rule", "supported_types"]

Rule = Callable[[nn.Module, Interval, "Tensor | None"], Interval]
Observer = Callable[[str, nn.Module, Interval, Interval], None]


class UnsupportedModuleError(NotImplementedError):
    """IBP has no rule for a module. ``path`` is its dotted name in the model, ``module_type`` its type."""

    def __init__(self, path: str, module: nn.Module, reason: str | None = None):
        self.path = path
        self.module_type = type(module)
        where = f"{path} ({type(module).__name__})"
        detail = reason or (
            "IBP has no rule for this module type. Supported: "
            + ", ".join(sorted(t.__name__ for t in _RULES if t.__module__.startswith("torch")))
            + ", Sequential, certcore.bounds.Residual. Give the module a method "
            "`interval_forward(self, box) -> Interval`, or register a rule with "
            "certcore.bounds.register_rule(type, fn)"
        )
        super().__init__(f"unsupported module {where}: {detail}")


class Residual(nn.Module):
    """``block(x) + shortcut(x)``; ``shortcut=None`` is the identity. IBP bounds both branches on the
    same input box and adds them. Put a post-activation after it: ``Sequential(Residual(...), ReLU())``."""

    def __init__(self, block: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.block = block
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x) + self.shortcut(x)


_RULES: dict[type, Rule] = {}


def register_rule(module_type: type, rule: Rule) -> None:
    """Register ``rule(module, box, clean_input) -> Interval`` for modules of exactly ``module_type``
    (and subclasses that do not override ``forward``). ``clean_input`` is the module's clean input,
    or None when ``ibp`` was called without ``clean``."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    _RULES[module_type] = rule


def supported_types() -> tuple[type, ...]:
    return (nn.Sequential, Residual, *_RULES)


def _elementwise(fn: Callable[[Tensor], Tensor]) -> Rule:
    return lambda m, box, clean: interval_monotone(box, fn)


def _module_monotone(m: nn.Module, box: Interval, clean: Tensor | None) -> Interval:
    return interval_monotone(box, m)


def _dropout(m: nn.Module, box: Interval, clean: Tensor | None) -> Interval:
    if m.training and m.p > 0:
        raise _Unsupported("Dropout in train mode is random; put the model in eval mode for IBP")
    return box


def _elu(m: nn.Module, box: Interval, clean: Tensor | None) -> Interval:
    if m.alpha < 0:
        raise _Unsupported(f"ELU with alpha={m.alpha} < 0 is not monotone")
    return interval_monotone(box, m)


def _hardtanh(m: nn.Module, box: Interval, clean: Tensor | None) -> Interval:
    if m.min_val > m.max_val:
        raise _Unsupported("Hardtanh with min_val > max_val")
    return interval_monotone(box, m)


class _Unsupported(Exception):
    """Raised by a rule that rejects a module's configuration; turned into UnsupportedModuleError."""


for _t in (nn.Linear,):
    register_rule(_t, lambda m, box, clean: interval_linear(box, m.weight, m.bias))
for _t in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_rule(_t, lambda m, box, clean: interval_conv2d(box, m))
for _t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_rule(_t, lambda m, box, clean: interval_batchnorm(box, m, clean))
register_rule(nn.ReLU, _elementwise(F.relu))
register_rule(nn.Tanh, _elementwise(torch.tanh))
register_rule(nn.Sigmoid, _elementwise(torch.sigmoid))
register_rule(nn.LeakyReLU, lambda m, box, clean: interval_leaky_relu(box, m.negative_slope))
for _t in (nn.ReLU6, nn.Softplus, nn.SELU, nn.Hardsigmoid, nn.LogSigmoid, nn.Softsign):
    register_rule(_t, _module_monotone)
register_rule(nn.ELU, _elu)
register_rule(nn.CELU, _elu)
register_rule(nn.Hardtanh, _hardtanh)
register_rule(nn.Identity, lambda m, box, clean: box)
register_rule(nn.Flatten, lambda m, box, clean: interval_flatten(box, m.start_dim, m.end_dim))
register_rule(nn.Unflatten, _module_monotone)
for _t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout):
    register_rule(_t, _dropout)
for _t in (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
):
    register_rule(_t, lambda m, box, clean: interval_avgpool(box, m))
for _t in (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
):
    register_rule(_t, lambda m, box, clean: interval_maxpool(box, m))


def _find_rule(m: nn.Module) -> Rule | None:
    """The rule of the nearest registered base class, unless ``m``'s class overrides its forward."""
    for base in type(m).__mro__:
        if base in _RULES:
            return _RULES[base] if type(m).forward is base.forward else None
    return None


def _is_plain(m: nn.Module, base: type) -> bool:
    return isinstance(m, base) and type(m).forward is base.forward


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def _takes_clean(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "clean" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _child(path: str, name: str) -> str:
    return name if path == "" else f"{path}.{name}"


def _propagate(
    m: nn.Module, box: Interval, clean: Tensor | None, path: str, observer: Observer | None
) -> tuple[Interval, Tensor | None]:
    hook = getattr(m, "interval_forward", None)
    if callable(hook):
        out = hook(box, clean=clean) if _takes_clean(hook) else hook(box)
        if not isinstance(out, Interval):
            raise TypeError(
                f"{path or 'model'} ({type(m).__name__}).interval_forward returned {type(out).__name__}, "
                "expected an Interval"
            )
        clean_out = m(clean) if clean is not None else None
    elif _has_hooks(m):
        raise UnsupportedModuleError(
            path or "model",
            m,
            "the module has forward hooks, which may change its output; "
            "remove them or give it an interval_forward",
        )
    elif _is_plain(m, nn.Sequential):
        out, clean_out = box, clean
        for name, child in m.named_children():
            out, clean_out = _propagate(child, out, clean_out, _child(path, name), observer)
    elif _is_plain(m, Residual):
        a, ca = _propagate(m.block, box, clean, _child(path, "block"), observer)
        b, cb = _propagate(m.shortcut, box, clean, _child(path, "shortcut"), observer)
        out = interval_add(a, b)
        clean_out = ca + cb if clean is not None else None
    else:
        rule = _find_rule(m)
        if rule is None:
            raise UnsupportedModuleError(path or "model", m)
        try:
            out = rule(m, box, clean)
        except _Unsupported as exc:
            raise UnsupportedModuleError(path or "model", m, str(exc)) from None
        except (ValueError, TypeError) as exc:
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(f"{path or 'model'} ({type(m).__name__}): {exc}") from exc
        clean_out = m(clean) if clean is not None else None
    if observer is not None:
        observer(path, m, box, out)
    return out, clean_out


def _check_inputs(box: Interval, clean: object, return_clean: bool, check: bool) -> None:
    """Argument checks of ``ibp``; ``check`` adds the value checks (finite box and clean batch)."""
    if not isinstance(box, Interval):
        raise TypeError(
            f"box must be a certcore.bounds.Interval, got {type(box).__name__} (see Interval.from_eps)"
        )
    if check and box.lower.numel():
        n_inf = int((~torch.isfinite(box.lower)).sum() + (~torch.isfinite(box.upper)).sum())
        if n_inf:
            raise ValueError(
                f"ibp needs a bounded input box, but it has {n_inf} infinite or NaN ends; "
                "clip it to the data range (Interval.from_eps(..., data_min, data_max))"
            )
        if clean is not None and isinstance(clean, Tensor) and not bool(torch.isfinite(clean).all()):
            raise ValueError("clean must be finite (found NaN or infinite entries)")
    if clean is not None:
        if not isinstance(clean, Tensor) or not clean.is_floating_point():
            raise TypeError(f"clean must be a floating torch.Tensor, got {type(clean).__name__}")
        if clean.dim() != box.lower.dim() or clean.shape[1:] != box.shape[1:] or clean.dtype != box.dtype:
            raise ValueError(
                f"clean (shape {tuple(clean.shape)}, {clean.dtype}) "
                "must match the box's per-sample shape and dtype "
                f"(box shape {tuple(box.shape)}, {box.dtype})"
            )
    elif return_clean:
        raise ValueError("return_clean=True needs the clean batch: pass clean=x")


def ibp(
    module: nn.Module,
    box: Interval,
    *,
    clean: Tensor | None = None,
    return_clean: bool = False,
    observer: Observer | None = None,
    check: bool = True,
) -> Interval | tuple[Interval, Tensor]:
    """Interval bounds of ``module(x)`` for every ``x`` in ``box``.

    ``clean``: the clean batch (usually the box centre before clipping), needed when a BatchNorm is in
    train mode (its bounds use the clean batch's statistics). ``return_clean=True`` also returns
    ``module(clean)`` from the same pass. ``observer(path, module, box_in, box_out)`` is called after
    every module (leaves and containers), e.g. to collect pre-activation bounds for regularisers.
    Differentiable in the box and the parameters.

    ``check=False`` skips the value checks of the inputs (finite box and clean batch), which
    synchronise with the GPU once per call; shape and dtype checks always run.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    _check_inputs(box, clean, return_clean, check)
    out, clean_out = _propagate(module, box, clean, "", observer)
    return (out, clean_out) if return_clean else out
