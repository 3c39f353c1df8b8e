"""L_p-distance and interval ℓ∞-distance ops, on CPU (C++), CUDA and a pure-PyTorch reference.

- ``norm_dist(x, w, p, groups=1)``: ``y[b, o, s] = ||x[b, group(o), s] - w[o]||_p``, differentiable.
- ``bound_inf_dist(lower, upper, w, groups=1)``: exact interval bounds of the p = inf layer,
  differentiable (IBP training through ℓ∞-distance layers).
- ``reference``: the pure-PyTorch definition of the ops (test oracle and fallback backend).
- ``torch.ops.certcore.{norm_dist,bound_inf_dist}_{forward,backward}``: the registered ops.

``certcore.backend()`` says which backend serves each op; see ``_registry`` for
``CERTCORE_BACKEND``.
"""

from certcore.ops import (
    _registry,  # noqa: F401  (registers fallback, autograd and fake kernels)
    reference,
)
from certcore.ops._api import bound_inf_dist, norm_dist

__all__ = ["bound_inf_dist", "norm_dist", "reference"]
