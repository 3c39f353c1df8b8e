"""Intervals and interval bound propagation (IBP).

    >>> from certcore.bounds import Interval, ibp, ibp_margin_lower, certified
    >>> box = Interval.from_eps(x, eps, data_min=0.0, data_max=1.0)   # ℓ∞ box clipped to the data range
    >>> logit_bounds = ibp(model, box)                                 # Interval of the outputs
    >>> lb = ibp_margin_lower(model, box, y, clean=x)                  # (B, K-1) lower bounds of z_y - z_j
    >>> certified(lb)                                                  # (B,) bool

``ibp`` handles ``nn.Sequential`` trees of Linear, Conv, BatchNorm (train mode: clean-batch statistics;
eval mode: running statistics), monotone activations, Flatten, pools and :class:`Residual`. Any
module with ``interval_forward(self, box) -> Interval`` plugs in as-is. All of it is differentiable,
so an IBP loss can be trained on. The single-layer rules (``interval_linear``, ``interval_conv2d``,
...) are public for packages that write their own propagation.
"""

from certcore.bounds.ibp import Residual, UnsupportedModuleError, ibp, register_rule, supported_types
from certcore.bounds.interval import Interval
from certcore.bounds.rules import (
    batchnorm_affine,
    interval_add,
    interval_avgpool,
    interval_batchnorm,
    interval_conv2d,
    interval_elementwise_affine,
    interval_flatten,
    interval_leaky_relu,
    interval_linear,
    interval_maxpool,
    interval_monotone,
    interval_relu,
    interval_sigmoid,
    interval_tanh,
)
from certcore.bounds.spec import certified, ibp_margin_lower, ibp_spec_bounds, interval_spec, margin_spec

__all__ = [
    "Interval",
    "Residual",
    "UnsupportedModuleError",
    "batchnorm_affine",
    "certified",
    "ibp",
    "ibp_margin_lower",
    "ibp_spec_bounds",
    "interval_add",
    "interval_avgpool",
    "interval_batchnorm",
    "interval_conv2d",
    "interval_elementwise_affine",
    "interval_flatten",
    "interval_leaky_relu",
    "interval_linear",
    "interval_maxpool",
    "interval_monotone",
    "interval_relu",
    "interval_sigmoid",
    "interval_spec",
    "interval_tanh",
    "margin_spec",
    "register_rule",
    "supported_types",
]
