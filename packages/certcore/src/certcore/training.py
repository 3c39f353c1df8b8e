"""The resumable epoch loop shared by every package's training script.

:func:`fit` runs ``train_one_epoch(epoch)`` and ``evaluate(epoch)`` for ``epoch = 0 .. epochs - 1``, logs
what they return (``train.log`` / ``test.log`` TSV rows, TensorBoard ``train/*`` / ``test/*`` scalars, a
line in ``log.txt``) and checkpoints the run atomically to ``<run>/checkpoint.pt``.

Resuming gives bit-identical results (on CPU) to a run that was never interrupted, provided the
callbacks follow two rules:

* data order comes from ``epoch_generator(seed, epoch)`` (or ``sampler.set_epoch(epoch)`` under DDP),
  not from whatever the global RNG holds;
* everything that changes across epochs lives in the model, optimizer, scheduler or global RNGs
  (which the checkpoint holds), not in Python objects the callbacks keep on the side.

A fresh run starts with ``seed_everything(seed)``; a resumed one restores the RNG states saved after
its last finished epoch and continues with the next epoch.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from certcore.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from certcore.distributed import all_reduce_mean, barrier
from certcore.runlog import RunDirectory
from certcore.seeding import seed_everything

__all__ = ["CHECKPOINT_NAME", "EpochRecord", "FitResult", "fit"]

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class EpochRecord:
    """The metrics of one epoch (averaged over ranks); ``test`` is None when it was not evaluated."""

    epoch: int
    train: dict[str, float]
    test: dict[str, float] | None


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: ``history`` holds only the epochs run by this call."""

    run_dir: Path
    checkpoint: Path
    last_epoch: int | None
    resumed_from: int | None
    finished: bool
    history: tuple[EpochRecord, ...]


def _metrics(values: Any, source: str, epoch: int) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise TypeError(
            f"{source}({epoch}) must return a dict of metric name -> number, got {type(values).__name__}"
        )
    checked: dict[str, float] = {}
    for name, value in values.items():
        if not isinstance(name, str) or name == "epoch":
            raise ValueError(
                f"{source}({epoch}) returned the metric name {name!r}; use strings other than 'epoch'"
            )
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{source}({epoch}) returned {name}={value!r}; metrics must be real numbers")
        checked[name] = float(value)
    means = all_reduce_mean(checked) if checked else {}
    return {name: means[name] for name in checked}  # the caller's order, for the TSV columns


def _summary(metrics: Mapping[str, float]) -> str:
    return " ".join(
        f"{name} {value:.4g}" if math.isfinite(value) else f"{name} {value}"
        for name, value in metrics.items()
    )


def _check_args(epochs: int, checkpoint_every: int, stop_after_epoch: int | None) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive int, got {checkpoint_every!r}")
    if stop_after_epoch is not None and not 0 <= stop_after_epoch < epochs:
        raise ValueError(f"stop_after_epoch must lie in [0, {epochs}), got {stop_after_epoch!r}")


def fit(
    run_dir: str | os.PathLike | RunDirectory,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None = None,
    epochs: int,
    train_one_epoch: Callable[[int], Mapping[str, float]],
    evaluate: Callable[[int], Mapping[str, float] | None] | None = None,
    spec: Mapping[str, Any],
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_every: int = 1,
    seed: int,
    stop_after_epoch: int | None = None,
    step_scheduler: bool = True,
) -> FitResult:
    """Train for ``epochs`` epochs (0-based), resuming from ``<run>/checkpoint.pt`` when ``resume``.

    ``train_one_epoch(epoch)`` trains one epoch and returns its metrics; ``evaluate(epoch)`` returns
    test metrics or None to skip. Both are called on every rank; their metrics are averaged over
    ranks. ``scheduler.step()`` runs after each epoch unless ``step_scheduler=False`` (a per-batch
    scheduler stepped by ``train_one_epoch``); either way its state is checkpointed.

    A checkpoint is written every ``checkpoint_every`` epochs, after the last epoch and after
    ``stop_after_epoch``, where the loop stops early (as if interrupted; ``finished`` is False). If
    the run is interrupted (``KeyboardInterrupt``, an error) mid-epoch, the last checkpoint stays intact.
    ``spec`` (plain types) is stored in every checkpoint and must match on resume. ``run_dir`` is a
    path (opened with ``resume``/``overwrite`` and closed on return) or an open :class:`RunDirectory`.
    """
    _check_args(epochs, checkpoint_every, stop_after_epoch)
    owns_run = not isinstance(run_dir, RunDirectory)
    checkpoint_path = (Path(run_dir) if owns_run else run_dir.path) / CHECKPOINT_NAME
    if resume and not checkpoint_path.is_file():  # checked before the directory is touched
        raise CheckpointError(
            f"resume=True but {checkpoint_path} does not exist; start without resume, or pass "
            "overwrite=True to clear the directory and start over"
        )
    run = RunDirectory(run_dir, resume=resume, overwrite=overwrite) if owns_run else run_dir
    history: list[EpochRecord] = []
    resumed_from: int | None = None
    last_saved: int | None = None
    epoch = -1
    try:
        if resume:
            loaded = load_checkpoint(
                checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler, expected_spec=spec
            )
            resumed_from = last_saved = loaded.epoch
            run.rewind(loaded.epoch)
            run.log(
                f"resumed from {checkpoint_path} after epoch {loaded.epoch} (written by {loaded.versions})"
            )
        else:
            seed_everything(seed)
            run.log(f"spec: {json.dumps(dict(spec), sort_keys=True, default=str)}")
        start = 0 if resumed_from is None else resumed_from + 1
        for epoch in range(start, epochs):
            began = time.perf_counter()
            train = _metrics(train_one_epoch(epoch), "train_one_epoch", epoch)
            if scheduler is not None and step_scheduler:
                scheduler.step()
            test = None
            if evaluate is not None:
                result = evaluate(epoch)
                test = None if result is None else _metrics(result, "evaluate", epoch)
            history.append(EpochRecord(epoch, train, test))
            run.table("train.log", ["epoch", *train]).log({"epoch": epoch, **train})
            run.scalars(epoch, train, prefix="train/")
            line = f"epoch {epoch + 1}/{epochs} | train {_summary(train)}"
            if test is not None:
                run.table("test.log", ["epoch", *test]).log({"epoch": epoch, **test})
                run.scalars(epoch, test, prefix="test/")
                line += f" | test {_summary(test)}"
            run.log(f"{line} | {time.perf_counter() - began:.1f} s")
            stopping = epoch == stop_after_epoch
            if (epoch + 1) % checkpoint_every == 0 or epoch == epochs - 1 or stopping:
                if run.is_main:
                    save_checkpoint(
                        checkpoint_path,
                        model=model,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        epoch=epoch,
                        spec=spec,
                    )
                last_saved = epoch
                barrier()
            if stopping:
                run.log(f"stopped after epoch {epoch} as asked (stop_after_epoch); resume to continue")
                break
        else:
            if resumed_from is not None and resumed_from >= epochs - 1:
                run.log(f"nothing to do: the checkpoint already holds epoch {resumed_from} of {epochs}")
    except BaseException as error:
        where = f"during epoch {epoch}" if epoch >= 0 else "before the first epoch"
        saved = (
            "no checkpoint was written"
            if last_saved is None
            else f"{checkpoint_path} holds epoch {last_saved}"
        )
        run.log(f"interrupted {where} ({type(error).__name__}); {saved}")
        raise
    finally:
        if owns_run:
            run.close()
    last_epoch = history[-1].epoch if history else resumed_from
    return FitResult(
        run_dir=run.path,
        checkpoint=checkpoint_path,
        last_epoch=last_epoch,
        resumed_from=resumed_from,
        finished=last_epoch is not None and last_epoch >= epochs - 1,
        history=tuple(history),
    )
