"""The ``reproduce`` entry point: ``run(spec, profile, ctx) -> {"clean_acc", "verified_acc", ...}``.

``profile.recipe`` is a :class:`~lirpa.training.TrainConfig`. A profile with ``synthetic_data=True``
(smoke) trains on generated images of the dataset's shape (``synthetic-<dataset>``); otherwise the data
are read from ``ctx.data_dir`` (certcore's default root when None). With ``ctx.eval_only`` the checkpoint
is evaluated instead of training. The run directory receives the logs of :func:`lirpa.training.train`
(``log.txt``, ``train.log``, ``test.log``, TensorBoard events, ``checkpoint.pt``).

Metrics are percentages: ``clean_acc``, ``pgd_acc``, ``verified_acc`` (certified by IBP or CROWN-IBP),
``ibp_verified_acc``, ``crown_ibp_verified_acc``, and the errors the paper reports (``clean_err``,
``verified_err`` = 100 - the accuracies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from certcore.checkpoint import load_checkpoint
from certcore.training import CHECKPOINT_NAME
from lirpa.training import TrainConfig, evaluate, load_data, train
from lirpa.zoo import build_model

__all__ = ["run", "profile_config", "to_percent"]


def profile_config(recipe: TrainConfig, *, synthetic: bool, data_dir, seed: int) -> TrainConfig:
    dataset = recipe.dataset
    if synthetic and not dataset.startswith("synthetic-"):
        dataset = f"synthetic-{dataset}"
    return recipe.with_(
        dataset=dataset,
        data_dir=None if data_dir is None else str(data_dir),
        seed=seed,
    )


def to_percent(errors: dict[str, float]) -> dict[str, float]:
    out = {
        "clean_acc": 100.0 * (1.0 - errors["clean_err"]),
        "pgd_acc": 100.0 * (1.0 - errors["pgd_err"]),
        "verified_acc": 100.0 * (1.0 - errors["verified_err"]),
        "ibp_verified_acc": 100.0 * (1.0 - errors["ibp_verified_err"]),
        "crown_ibp_verified_acc": 100.0 * (1.0 - errors["crown_ibp_verified_err"]),
        "clean_err": 100.0 * errors["clean_err"],
        "verified_err": 100.0 * errors["verified_err"],
    }
    return {k: round(v, 4) for k, v in out.items()}


def run(spec: Any, profile: Any, ctx: Any) -> dict[str, float]:
    recipe = profile.recipe
    if not isinstance(recipe, TrainConfig):
        raise TypeError(
            f"{spec.id} [{profile.name}]: the recipe must be a lirpa TrainConfig, got {type(recipe).__name__}"
        )
    cfg = profile_config(recipe, synthetic=profile.synthetic_data, data_dir=ctx.data_dir, seed=ctx.seed)
    data = load_data(cfg)
    if ctx.eval_only is not None:
        model = build_model(cfg.model, data.info.input_shape, data.info.num_classes)
        load_checkpoint(Path(ctx.eval_only), model=model)
        model.to(ctx.device)
        return to_percent(evaluate(model, data, cfg, device=ctx.device))
    resume = bool(ctx.resume) and (Path(ctx.run_dir) / CHECKPOINT_NAME).is_file()
    result = train(
        cfg, ctx.run_dir, data=data, resume=resume, overwrite=bool(ctx.resume) and not resume,
        device=ctx.device,
    )
    return to_percent(result.metrics)
