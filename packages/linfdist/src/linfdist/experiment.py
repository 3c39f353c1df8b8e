"""The ``reproduce`` entry point: ``run(spec, profile, ctx) -> {"clean_acc", "pgd_acc", "certified_acc"}``.

``profile.recipe`` is a :class:`~linfdist.recipes.TrainRecipe`. A profile with ``synthetic_data=True``
(smoke) trains on generated images of the dataset's shape; otherwise the dataset is read from
``ctx.data_dir`` (certcore's default root when None). With ``ctx.eval_only`` the checkpoint is
certified and attacked instead of training. The run directory receives the logs of
:mod:`linfdist.train` (``train.log``, ``test.log``, ``train_inf.log``, ``test_inf.log``, ``log.txt``,
TensorBoard events, ``checkpoint.pt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from certcore.training import CHECKPOINT_NAME
from linfdist.data import TensorData, load_data, synthetic_data
from linfdist.recipes import TrainRecipe
from linfdist.train import evaluate_checkpoint, train

__all__ = ["run", "profile_data"]


def profile_data(recipe: TrainRecipe, *, synthetic: bool, data_dir, seed: int) -> TensorData:
    if synthetic:
        n_train = recipe.train_subset or 512
        return synthetic_data(
            recipe.dataset,
            n_train=n_train,
            n_test=recipe.eval.test_subset or 256,
            normalization=recipe.normalization,
            seed=seed,
        )
    return load_data(
        recipe.dataset,
        data_dir=data_dir,
        normalization=recipe.normalization,
        train_subset=recipe.train_subset,
        seed=seed,
    )


def run(spec: Any, profile: Any, ctx: Any) -> dict[str, float]:
    recipe = profile.recipe
    if not isinstance(recipe, TrainRecipe):
        raise TypeError(
            f"{spec.id} [{profile.name}]: the recipe must be a linfdist TrainRecipe, "
            f"got {type(recipe).__name__}"
        )
    data = profile_data(recipe, synthetic=profile.synthetic_data, data_dir=ctx.data_dir, seed=ctx.seed)
    if ctx.eval_only is not None:
        return evaluate_checkpoint(recipe, data, ctx.eval_only, device=ctx.device, run_dir=ctx.run_dir)
    # --resume of a run that stopped before its first checkpoint starts over (its partial logs are cleared)
    resume = bool(ctx.resume) and (Path(ctx.run_dir) / CHECKPOINT_NAME).is_file()
    result = train(
        recipe,
        data,
        ctx.run_dir,
        device=ctx.device,
        seed=ctx.seed,
        resume=resume,
        overwrite=bool(ctx.resume) and not resume,
    )
    return result.metrics
