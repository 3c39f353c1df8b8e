"""The MLP head of ``HybridModel``: linear layers with a run-time weight scale, and their IBP.

As in the v2 code, weights are ``N(0, 1)`` and multiplied by ``1/sqrt(fan_in)`` at run time (biases
start at 0); with Adam this parameterisation changes the effective step size, so it is kept.
``margin_upper`` bounds ``z_j − z_y`` through the last layer with the rows ``W_j − W_y`` directly,
which is tighter than subtracting two independent logit bounds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from certcore.bounds import Interval, interval_tanh

__all__ = ["ScaledLinear", "interval_tanh"]  # interval_tanh re-exported from certcore.bounds


class ScaledLinear(nn.Module):
    """``y = (W x)·w_scale/sqrt(in) + b·b_scale`` with ``W ~ N(0, 1)``, ``b = 0`` at init."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        w_scale: float = 1.0,
        b_scale: float = 1.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.w_scale = w_scale / math.sqrt(in_features)
        self.b_scale = b_scale

    def _affine(self, x: Tensor, w_scale: float) -> Tensor:
        y = (x @ self.weight.t()) * w_scale
        if self.bias is not None:
            y = y + self.bias * self.b_scale
        return y

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(1) != self.in_features:
            raise ValueError(
                f"ScaledLinear({self.in_features} -> {self.out_features}) expects (B, {self.in_features}); "
                f"got {tuple(x.shape)}"
            )
        return self._affine(x, self.w_scale)

    def interval_forward(self, box: Interval) -> Interval:
        centre = self._affine(box.lower + box.upper, self.w_scale / 2)
        radius = ((box.upper - box.lower) @ self.weight.abs().t()) * (self.w_scale / 2)
        return Interval(centre - radius, centre + radius, check=False)

    def margin_upper(self, box: Interval, targets: Tensor) -> Tensor:
        """Upper bounds of ``z_j − z_y`` (``(B, out)``, exactly 0 at ``j = y``) over the input box."""
        w = self.weight.unsqueeze(0) - self.weight[targets].unsqueeze(1)  # (B, out, in)
        centre = torch.bmm(w, (box.lower + box.upper).unsqueeze(-1)).squeeze(-1) * (self.w_scale / 2)
        if self.bias is not None:
            centre = centre + (self.bias.unsqueeze(0) - self.bias[targets].unsqueeze(1)) * self.b_scale
        radius = torch.bmm(w.abs(), (box.upper - box.lower).unsqueeze(-1)).squeeze(-1) * (self.w_scale / 2)
        return centre + radius

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )
