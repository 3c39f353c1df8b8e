"""The typed training recipe, and the recipes of the v2 scripts and README rows.

``TrainRecipe`` holds everything a run needs; ε values are in *pixel* units (pixels in [0, 1]) and are
divided by the dataset's scalar std at run time. The presets reproduce ``command/*.sh`` of
zbh2047/L_inf-dist-net-v2 (the five v2 rows) and the two v1-baseline commands of its README:

=================  =========  ====================================  =========  ==================  ========
preset             dataset    model                                 loss       epochs              eps_train
=================  =========  ====================================  =========  ==================  ========
``MNIST01``        mnist      MLPModel(5, 5120, id 10, scalar)      mixture    0,0,25,400,450      0.3
``MNIST03``        mnist      MLPModel(5, 5120, id 10, scalar)      mixture    0,0,25,400,450      0.45
``CIFAR2``         cifar10    MLPModel(6, 5120, id 10, scalar)      mixture    0,0,100,1250,1300   0.03922
``CIFAR8``         cifar10    MLPModel(6, 5120, id 10, scalar)      mixture    0,0,100,1250,1300   0.09411
``CIFAR16``        cifar10    MLPModel(6, 5120, id 10, scalar)      mixture    0,0,100,1250,1300   0.15685
``CIFAR8_V1``      cifar10    MLPModel(6, 5120, id 10)              hinge      0,0,100,750,800     0.1569
``CIFAR8_V1HYB``   cifar10    HybridModel(7, 5120, id 10, h 512)    crossent.  0,100,100,750,800   0.03451
=================  =========  ====================================  =========  ==================  ========

All: p 8 → 1000 (then ∞), batch 512, Adam(0.9, 0.99, eps 1e-10), lr 0.03 (v1 baselines 0.02), scalar
lr 0.006, seed 2021, the dataset's v2 augmentation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from linfdist.losses import CrossEntropyLoss, HingeLoss, LossConfig, MixtureLoss
from linfdist.models import HybridConfig, MLPConfig, ModelConfig
from linfdist.schedule import EpochSpec, RecipeSchedule

__all__ = ["TrainRecipe", "EvalPlan", "PRESETS", "recipe_to_plain"]


@dataclass(frozen=True)
class EvalPlan:
    """When to evaluate during training (v2 defaults) and how much of each set.

    Test accuracy at the current p and certified accuracy at p = ∞ (test set, and the train set if
    ``certify_train``) run when ``epoch % every == every − 1`` or in the last ``last`` epochs. PGD runs
    when ``epoch ≥ pgd_from · T`` and (``epoch % pgd_every == pgd_every − 1`` or in the last ``last``
    epochs), if ``pgd_during_training``; and always once after training. ``*_subset``: evaluate on the
    first N samples only (None: all).
    """

    every: int = 5
    last: int = 5
    certify_train: bool = True
    pgd_during_training: bool = True
    pgd_from: float = 0.9
    pgd_every: int = 50
    pgd_steps: int = 100
    pgd_restarts: int = 1
    test_subset: int | None = None
    train_cert_subset: int | None = None
    pgd_subset: int | None = None

    def __post_init__(self) -> None:
        if (
            self.every < 1
            or self.last < 0
            or self.pgd_every < 1
            or self.pgd_steps < 0
            or self.pgd_restarts < 1
        ):
            raise ValueError(f"invalid EvalPlan {self}")

    def evaluates(self, epoch: int, total: int) -> bool:
        return epoch % self.every == self.every - 1 or epoch >= total - self.last

    def attacks(self, epoch: int, total: int) -> bool:
        return (
            self.pgd_during_training
            and self.pgd_steps > 0
            and epoch >= self.pgd_from * total
            and (epoch % self.pgd_every == self.pgd_every - 1 or epoch >= total - self.last)
        )


@dataclass(frozen=True)
class TrainRecipe:
    dataset: str
    model: ModelConfig
    loss: LossConfig
    epochs: EpochSpec
    eps_train: float
    eps_test: float
    p_start: float = 8.0
    p_end: float = 1000.0
    batch_size: int = 512
    lr: float = 0.03
    scalar_lr: float = 0.006
    betas: tuple[float, float] = (0.9, 0.99)
    adam_eps: float = 1e-10
    seed: int = 2021
    augment: bool = True
    normalization: str = "linfdist"
    train_subset: int | None = None
    eval: EvalPlan = field(default_factory=EvalPlan)
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        for name in ("eps_train", "eps_test"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (pixel units); got {v!r}")
        if self.eps_test <= 0:
            raise ValueError(f"eps_test must be > 0 to certify anything; got {self.eps_test}")
        if isinstance(self.model, MLPConfig) and self.eps_train <= 0:
            raise ValueError("MLPModel trains on margins divided by 2*eps_train: eps_train must be > 0")
        if isinstance(self.model, MLPConfig) and self.epochs.eps_end > self.epochs.eps_start:
            raise ValueError(
                "MLPModel margins are divided by 2*eps: an eps ramp from 0 "
                f"(epochs {self.epochs.as_string()}) "
                "would divide by zero; use eps_start == eps_end"
            )
        if self.batch_size < 1 or self.lr <= 0 or self.scalar_lr < 0 or self.checkpoint_every < 1:
            raise ValueError(
                f"batch_size >= 1, lr > 0, scalar_lr >= 0, checkpoint_every >= 1 required; got "
                f"{self.batch_size}, {self.lr}, {self.scalar_lr}, {self.checkpoint_every}"
            )
        if self.train_subset is not None and self.train_subset < 1:
            raise ValueError(f"train_subset must be >= 1 or None; got {self.train_subset}")
        self.schedule(1)  # validates the p / λ schedule (a decreasing p schedule is an error)

    def schedule(self, iters_per_epoch: int, std: float = 1.0) -> RecipeSchedule:
        """The per-iteration schedule; ε in normalised units (``eps_train / std``)."""
        lam = (self.loss.lam_start, self.loss.lam_end) if isinstance(self.loss, MixtureLoss) else (0.0, 0.0)
        return RecipeSchedule(
            self.epochs,
            self.eps_train / std,
            p_start=self.p_start,
            p_end=self.p_end,
            lam_start=lam[0],
            lam_end=lam[1],
            iters_per_epoch=iters_per_epoch,
        )

    def with_(self, **changes: Any) -> TrainRecipe:
        return replace(self, **changes)


def recipe_to_plain(recipe: TrainRecipe) -> dict[str, Any]:
    """Plain types only (for checkpoints): dataclasses as dicts, tuples as lists, each config's type kept."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    out = plain(asdict(recipe))
    out["model"]["type"] = type(recipe.model).__name__
    out["loss"]["type"] = type(recipe.loss).__name__
    return out


_MNIST_MODEL = MLPConfig(depth=5, width=5120, identity_val=10.0, scalar=True)
_CIFAR_MODEL = MLPConfig(depth=6, width=5120, identity_val=10.0, scalar=True)
_MNIST_EPOCHS = EpochSpec(0, 0, 25, 400, 450)
_CIFAR_EPOCHS = EpochSpec(0, 0, 100, 1250, 1300)

PRESETS: dict[str, TrainRecipe] = {
    "mnist01": TrainRecipe("mnist", _MNIST_MODEL, MixtureLoss(0.05, 0.0002), _MNIST_EPOCHS, 0.3, 0.1),
    "mnist03": TrainRecipe("mnist", _MNIST_MODEL, MixtureLoss(0.05, 0.0002), _MNIST_EPOCHS, 0.45, 0.3),
    "cifar2": TrainRecipe(
        "cifar10", _CIFAR_MODEL, MixtureLoss(0.05, 0.002), _CIFAR_EPOCHS, 0.03922, 0.0078425
    ),
    "cifar8": TrainRecipe("cifar10", _CIFAR_MODEL, MixtureLoss(0.1, 0.0005), _CIFAR_EPOCHS, 0.09411, 0.03137),
    "cifar16": TrainRecipe(
        "cifar10", _CIFAR_MODEL, MixtureLoss(0.1, 0.0002), _CIFAR_EPOCHS, 0.15685, 0.06274
    ),
    "cifar8-v1": TrainRecipe(
        "cifar10",
        MLPConfig(depth=6, width=5120, identity_val=10.0, scalar=False),
        HingeLoss(mix=0.25),
        EpochSpec(0, 0, 100, 750, 800),
        0.1569,
        0.03137,
        lr=0.02,
    ),
    "cifar8-v1hybrid": TrainRecipe(
        "cifar10",
        HybridConfig(depth=7, width=5120, hidden=512, identity_val=10.0),
        CrossEntropyLoss(mix=0.0),
        EpochSpec(0, 100, 100, 750, 800),
        0.03451,
        0.03137,
        lr=0.02,
    ),
}
