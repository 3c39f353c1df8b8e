"""Shape operations on one perturbed node that keep the batch dimension: ``nn.Flatten``,
``torch.flatten``, ``x.view``, ``x.reshape``, ``x.flatten``, ``squeeze``/``unsqueeze``, and the identities
(``nn.Identity``, ``nn.Dropout`` in eval mode, ``x.contiguous()``).

A per-sample reshape keeps the row-major order of each sample's entries, so every rule is the same
reshape: IBP reshapes both ends, backward reshapes ``A`` from ``(spec, batch, *out)`` to
``(spec, batch, *in)``, forward reshapes ``lw``/``uw`` to ``(batch, n_in, *out)``.
"""

from __future__ import annotations

import torch
from torch import nn

from certcore.bounds import Interval
from lirpa.ops.base import LinearBound, Op

RESHAPE_METHODS = ("view", "reshape", "flatten", "squeeze", "unsqueeze")
RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze)
IDENTITY_METHODS = ("contiguous", "clone")


class Reshape(Op):
    kind = "reshape"
    ibp_intermediate = True

    def bind(self, env):
        super().bind(env)
        out, inp = env[self.node.name], env[self.inputs[0]]
        if out.dim() == 0 or inp.dim() == 0 or out.shape[0] != inp.shape[0]:
            raise self.unsupported(
                f"reshape from {tuple(inp.shape)} to {tuple(out.shape)} does not keep the batch dimension"
            )

    def ibp(self, boxes):
        (box,) = boxes
        b = box.lower.shape[0]
        return Interval(
            box.lower.reshape(b, *self.out_shape), box.upper.reshape(b, *self.out_shape), check=False
        )

    def backward(self, lA, uA, boxes):
        def r(A):
            return None if A is None else A.reshape(A.shape[0], A.shape[1], *self.in_shapes[0])

        return [(r(lA), r(uA))], 0.0, 0.0

    def forward(self, xs, boxes):
        (x,) = xs
        b, n = x.lw.shape[:2]
        return LinearBound(
            x.lw.reshape(b, n, *self.out_shape),
            x.lb.reshape(b, *self.out_shape),
            x.uw.reshape(b, n, *self.out_shape),
            x.ub.reshape(b, *self.out_shape),
        )


class Identity(Op):
    """``nn.Identity``, ``nn.Dropout`` (eval mode or p = 0; train mode raises), ``contiguous``."""

    kind = "identity"
    ibp_intermediate = True

    def bind(self, env):
        super().bind(env)
        m = self.module
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise self.unsupported("Dropout in train mode is random; put the model in eval mode to bound it")

    def ibp(self, boxes):
        return boxes[0]

    def backward(self, lA, uA, boxes):
        return [(lA, uA)], 0.0, 0.0

    def forward(self, xs, boxes):
        return xs[0]
