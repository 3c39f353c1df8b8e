"""Which backend serves each certcore op, and the one-time warning when a compiled kernel is missing.

Cheap to import: ``certcore.ops`` (and with it ``certcore._C``) is loaded only when ``backend()``
is called.
"""

from __future__ import annotations

import warnings

__all__ = ["CertcoreFallbackWarning", "backend", "warn_fallback_once"]


class CertcoreFallbackWarning(RuntimeWarning):
    """An op runs on the pure-PyTorch reference because no compiled kernel serves it."""


_warned: set[str] = set()


def warn_fallback_once(device_type: str, reason: str) -> None:
    """Warn once per process and device type that the reference serves the ops there."""
    if device_type in _warned:
        return
    _warned.add(device_type)
    warnings.warn(
        f"certcore: {reason}; certcore ops on {device_type} run on the pure-PyTorch reference "
        "(same results, much slower). Rebuild the kernels with "
        "`pip install --no-build-isolation -e packages/certcore`, or set CERTCORE_BACKEND=reference "
        "to choose the reference on purpose.",
        CertcoreFallbackWarning,
        stacklevel=3,
    )


def backend(device=None) -> dict[str, str]:
    """What serves each op: ``{"norm_dist": ..., "bound_inf_dist": ...}``.

    With ``device`` (a ``torch.device`` or a string such as ``"cuda"``) each value is exactly one of
    ``"cpu kernel"``, ``"cuda kernel"`` or ``"reference"``. Without it, the CPU is described, and
    the GPU too where one is available, joined by ", " (e.g. ``"cpu kernel, cuda kernel"`` or
    ``"cpu kernel, reference on cuda"``). ``CERTCORE_BACKEND=reference`` makes every value
    ``"reference"``.
    """
    from certcore.ops import _registry

    return _registry.describe(device)
