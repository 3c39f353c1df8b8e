"""``BoundedTensor``: a tensor that carries its perturbation set.

It is a ``torch.Tensor`` subclass sharing storage (and autograd history) with the tensor it wraps; every
torch operation on it returns a plain tensor, so ``model(BoundedTensor(x, ptb))`` runs the model normally.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lirpa.perturbations import PerturbationLpNorm

__all__ = ["BoundedTensor"]


class BoundedTensor(Tensor):
    """``BoundedTensor(x, ptb)``; ``ptb`` is a :class:`PerturbationLpNorm` (or None: no perturbation)."""

    ptb: PerturbationLpNorm | None

    @staticmethod
    def __new__(cls, x: Tensor, ptb: PerturbationLpNorm | None = None):
        if not isinstance(x, Tensor):
            raise TypeError(f"BoundedTensor wraps a torch.Tensor, got {type(x).__name__}")
        if ptb is not None and not isinstance(ptb, PerturbationLpNorm):
            raise TypeError(f"ptb must be a PerturbationLpNorm or None, got {type(ptb).__name__}")
        if type(x) is not Tensor:
            x = x.as_subclass(Tensor)
        out = x.as_subclass(cls)
        out.ptb = ptb
        return out

    def __init__(self, x: Tensor, ptb: PerturbationLpNorm | None = None):
        pass

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))

    def __repr__(self, *, tensor_contents=None) -> str:
        return f"BoundedTensor({self.as_subclass(Tensor)!r}, ptb={self.ptb!r})"

    def __reduce_ex__(self, protocol):
        return (BoundedTensor, (self.as_subclass(Tensor).detach().clone(), self.ptb))

    def plain(self) -> Tensor:
        """The wrapped values as a plain tensor (same storage, same autograd history)."""
        return self.as_subclass(Tensor)
