"""ℓ∞-distance nets v1 (ICML'21) and v2 (ICLR'22) on certcore's ``norm_dist`` ops.

- layers: :class:`NormDist`, :class:`NormDistConv`, :class:`MeanShift` (``linfdist.layers``)
- models and typed configs: :class:`MLPModel` / :class:`MLPConfig`, :class:`HybridModel` /
  :class:`HybridConfig` (``linfdist.models``)
- the v2 recipe: :class:`EpochSpec`, :class:`RecipeSchedule` (p, ε, λ, lr per iteration), the losses
  :class:`MixtureLoss`, :class:`HingeLoss`, :class:`CrossEntropyLoss`
- certification at p = ∞ and PGD evaluation: ``linfdist.certify``
- training (one device or torchrun/DDP): ``linfdist.train``; the reproduce entry: ``linfdist.experiment``
"""

from linfdist.layers import (
    MeanShift,
    NormDist,
    NormDistBase,
    NormDistConv,
    at_p,
    get_p,
    is_inf_and_eval,
    set_p,
)
from linfdist.losses import CrossEntropyLoss, HingeLoss, MixtureLoss
from linfdist.models import HybridConfig, HybridModel, MLPConfig, MLPModel, build_model
from linfdist.recipes import PRESETS, EvalPlan, TrainRecipe
from linfdist.schedule import EpochSpec, RecipeSchedule, ScheduleState

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyLoss",
    "EpochSpec",
    "EvalPlan",
    "HingeLoss",
    "HybridConfig",
    "HybridModel",
    "MLPConfig",
    "MLPModel",
    "MeanShift",
    "MixtureLoss",
    "NormDist",
    "NormDistBase",
    "NormDistConv",
    "PRESETS",
    "RecipeSchedule",
    "ScheduleState",
    "TrainRecipe",
    "__version__",
    "at_p",
    "build_model",
    "get_p",
    "is_inf_and_eval",
    "set_p",
]
