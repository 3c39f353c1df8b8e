"""Automatic linear relaxation based perturbation analysis (after auto_LiRPA, NeurIPS'20).

    >>> from lirpa import BoundedModule, BoundedTensor, PerturbationLpNorm
    >>> bm = BoundedModule(model, torch.zeros(1, 1, 28, 28))
    >>> x = BoundedTensor(x0, PerturbationLpNorm(norm=float("inf"), x_L=x0 - eps, x_U=x0 + eps))
    >>> lb, ub = bm.compute_bounds(x=(x,), method="CROWN")       # or "IBP", "CROWN-IBP", "forward"
    >>> lb, ub = bm.compute_bounds(x=(x,), C=C, method="IBP")    # bounds of C·f(x), C: (B, n_spec, n_out)

Loss fusion: ``BoundedModule(CrossEntropyWrapper(model), (x, labels), bound_opts={"loss_fusion": True})``
and :func:`lirpa.loss_fusion.fused_robust_loss`; certified training: :mod:`lirpa.training`.

The model is traced with torch.fx; an operation without a sound bound rule raises
:class:`UnsupportedOperationError`. Intermediate bounds: ``bm[name].lower/.upper``,
``bm.intermediate_bounds()``, ``bm.relu_preactivation_bounds()``.
"""

from lirpa.bounded_module import BoundedModule
from lirpa.bounded_tensor import BoundedTensor
from lirpa.loss_fusion import CrossEntropyWrapper
from lirpa.ops.base import UnsupportedOperationError
from lirpa.perturbations import PerturbationLpNorm

__all__ = [
    "BoundedModule",
    "BoundedTensor",
    "CrossEntropyWrapper",
    "PerturbationLpNorm",
    "UnsupportedOperationError",
]
