"""ℓ∞-distance net models and their typed configs.

- ``MLPModel`` (v2; with ``scalar=False`` the v1 "ℓ∞-dist Net"): ``depth`` ``NormDist`` layers
  (pixels → width, (depth − 2) × width → width, width → classes with a bias and no mean shift).
  Logits are ``−y · scalar`` where ``scalar`` is a learned scale (v2) or 1.
- ``HybridModel`` (v1 "ℓ∞-dist Net+MLP"): ``depth − 2`` ``NormDist`` layers, then
  ``ScaledLinear(width → hidden) → tanh → ScaledLinear(hidden → classes)``, certified by IBP.

``forward(x)`` returns logits. ``forward(x, targets=y, eps=ε, data_min=…, data_max=…)`` returns
``(logits, worst)`` where ``worst[b, j]`` is an upper bound of ``z_j − z_y`` (``MLPModel``: divided
by ``2ε`` and unscaled; ``HybridModel``: the IBP bound of the head), 0 at ``j = y``. When every
distance layer is at ``p = ∞`` in eval mode and ``data_min/data_max`` are given, the bounds are real
IBP through the net over ``[max(x − ε, data_min), min(x + ε, data_max)]`` and a sample is certified
iff ``max_{j≠y} worst_j < 0``. Otherwise (training, finite p) the distance part's output box is
simply ``y ± ε`` (the 1-Lipschitz rule, exact only at ``p = ∞``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from certcore.bounds import Interval
from linfdist.head import ScaledLinear, interval_tanh
from linfdist.layers import NormDist, is_inf_and_eval

__all__ = ["MLPConfig", "HybridConfig", "ModelConfig", "MLPModel", "HybridModel", "build_model"]


@dataclass(frozen=True)
class MLPConfig:
    """``MLPModel(depth, width, identity_val, scalar)`` of the v2 scripts."""

    depth: int = 5
    width: int = 5120
    identity_val: float | None = 10.0
    scalar: bool = True
    std: float = 1.0
    kind: Literal["mlp"] = "mlp"

    def __post_init__(self) -> None:
        if self.depth < 2 or self.width < 1:
            raise ValueError(
                f"MLPConfig needs depth >= 2 and width >= 1; got depth={self.depth}, width={self.width}"
            )


@dataclass(frozen=True)
class HybridConfig:
    """``HybridModel(depth, width, identity_val, hidden)``: ℓ∞-dist backbone + tanh MLP head."""

    depth: int = 7
    width: int = 5120
    hidden: int = 512
    identity_val: float | None = 10.0
    std: float = 1.0
    kind: Literal["hybrid"] = "hybrid"

    def __post_init__(self) -> None:
        if self.depth < 3 or self.width < 1 or self.hidden < 1:
            raise ValueError(
                "HybridConfig needs depth >= 3, width >= 1, hidden >= 1; "
                f"got {self.depth}, {self.width}, {self.hidden}"
            )


ModelConfig = MLPConfig | HybridConfig


class _DistNet(nn.Module):
    """Input checks, the input box and the stack of ℓ∞-dist layers shared by both models."""

    input_shape: tuple[int, ...]

    def _dist_layers(
        self, config: MLPConfig | HybridConfig, input_shape: tuple[int, ...], num_classes: int, hidden: int
    ) -> list[NormDist]:
        """Set the shared fields; return ``NormDist(pixels → width)`` then ``hidden`` × ``NormDist(width →
        width)`` (all mean-shifted, no bias), in the order the originals construct them."""
        self.config = config
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = num_classes
        kw = {"identity_val": config.identity_val, "std": config.std}
        layers = [NormDist(math.prod(self.input_shape), config.width, bias=False, mean_shift=True, **kw)]
        width = config.width
        layers += [NormDist(width, width, bias=False, mean_shift=True, **kw) for _ in range(hidden)]
        return layers

    def _propagate(self, x: Tensor | None, box: Interval | None):
        """``self.layers`` on the point ``x`` and/or the box (each may be None)."""
        lower, upper = (None, None) if box is None else (box.lower, box.upper)
        for layer in self.layers:
            x, lower, upper = layer.propagate(x, lower, upper)
        return x, lower, upper

    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{type(self).__name__} was built for inputs of shape "
                f"(B, {', '.join(map(str, self.input_shape))}); "
                f"got {tuple(x.shape)}"
            )
        return x.flatten(1)

    def _input_box(
        self, x: Tensor, eps: float, data_min: Tensor | float | None, data_max: Tensor | float | None
    ) -> Interval | None:
        """The clipped ε-box when real IBP applies (p = ∞, eval, data range given), else None."""
        if data_min is None or data_max is None or not is_inf_and_eval(self):
            return None
        lo = torch.as_tensor(data_min, dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(data_max, dtype=x.dtype, device=x.device)
        return Interval(
            self._flat(torch.maximum(x - eps, lo)), self._flat(torch.minimum(x + eps, hi)), check=False
        )

    @staticmethod
    def _check_eps(eps: float) -> None:
        if not (eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be finite and >= 0; got {eps}")


class MLPModel(_DistNet):
    def __init__(self, config: MLPConfig, input_shape: tuple[int, ...], num_classes: int = 10):
        super().__init__()
        layers = self._dist_layers(config, input_shape, num_classes, config.depth - 2)
        kw = {"identity_val": config.identity_val, "std": config.std}
        layers.append(NormDist(config.width, num_classes, bias=True, mean_shift=False, **kw))
        self.layers = nn.Sequential(*layers)
        if config.scalar:
            self.scalar = nn.Parameter(torch.ones(1))
        else:
            self.register_buffer("scalar", torch.ones(1))

    def distance_logits(self, x: Tensor) -> Tensor:
        """The unscaled logits ``−y`` (the quantity the 2ε margin rule is stated on)."""
        return -self._propagate(self._flat(x), None)[0]

    def forward(
        self,
        x: Tensor,
        targets: Tensor | None = None,
        eps: float = 0.0,
        data_min: Tensor | float | None = None,
        data_max: Tensor | float | None = None,
    ):
        if targets is None:
            return self.distance_logits(x) * self.scalar
        self._check_eps(eps)
        if eps <= 0:
            raise ValueError("MLPModel margins are divided by 2*eps: eps must be > 0 when targets are given")
        box = self._input_box(x, eps, data_min, data_max)
        y, lower, upper = self._propagate(self._flat(x), box)
        if lower is None:
            lower, upper = y - eps, y + eps
        z, z_lower, z_upper = -y, -upper, -lower
        t = targets.view(-1, 1)
        margin = (z_upper - z_lower.gather(1, t)).scatter(1, t, 0.0)
        return z * self.scalar, margin / (2 * eps)

    def interval_forward(self, box: Interval) -> Interval:
        """Bounds of the (scaled) logits over a box of inputs (shaped like ``x``)."""
        _, lower, upper = self._propagate(
            None, Interval(self._flat(box.lower), self._flat(box.upper), check=False)
        )
        s = self.scalar
        a, b = -upper * s, -lower * s
        return Interval(torch.minimum(a, b), torch.maximum(a, b), check=False)


class HybridModel(_DistNet):
    def __init__(self, config: HybridConfig, input_shape: tuple[int, ...], num_classes: int = 10):
        super().__init__()
        self.layers = nn.Sequential(*self._dist_layers(config, input_shape, num_classes, config.depth - 3))
        self.hidden = ScaledLinear(config.width, config.hidden)
        self.final = ScaledLinear(config.hidden, num_classes)

    def forward(
        self,
        x: Tensor,
        targets: Tensor | None = None,
        eps: float = 0.0,
        data_min: Tensor | float | None = None,
        data_max: Tensor | float | None = None,
    ):
        if targets is None:
            h = self._propagate(self._flat(x), None)[0]
            return self.final(torch.tanh(self.hidden(h)))
        self._check_eps(eps)
        box = self._input_box(x, eps, data_min, data_max)
        h, lower, upper = self._propagate(self._flat(x), box)
        feat_box = (
            Interval(h - eps, h + eps, check=False) if lower is None else Interval(lower, upper, check=False)
        )
        h = torch.tanh(self.hidden(h))
        feat_box = interval_tanh(self.hidden.interval_forward(feat_box))
        return self.final(h), self.final.margin_upper(feat_box, targets)

    def interval_forward(self, box: Interval) -> Interval:
        _, lower, upper = self._propagate(
            None, Interval(self._flat(box.lower), self._flat(box.upper), check=False)
        )
        return self.final.interval_forward(
            interval_tanh(self.hidden.interval_forward(Interval(lower, upper, check=False)))
        )


def build_model(
    config: ModelConfig, input_shape: tuple[int, ...], num_classes: int = 10
) -> MLPModel | HybridModel:
    """The model of ``config`` for inputs of ``input_shape`` (``(C, H, W)``)."""
    if isinstance(config, MLPConfig):
        return MLPModel(config, input_shape, num_classes)
    if isinstance(config, HybridConfig):
        return HybridModel(config, input_shape, num_classes)
    raise TypeError(f"unknown model config {type(config).__name__}; expected MLPConfig or HybridConfig")
