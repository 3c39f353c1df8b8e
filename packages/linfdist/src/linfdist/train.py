"""The v2 training loop, on one device or under ``torchrun`` (DDP), resumable, with the v2 logs.

    python -m linfdist.train --preset mnist03 --data-dir ../shared/data --out runs/mnist03
    torchrun --nproc-per-node 4 -m linfdist.train --preset cifar8 --data-dir data --out runs/c8 [--resume]

Per iteration: p, ε, λ and the learning rate follow :class:`~linfdist.schedule.RecipeSchedule`;
the model returns ``(logits, worst)`` (the 1-Lipschitz ±ε rule in training) and the recipe's loss is
minimised with Adam (two parameter groups: everything at ``lr``, the output ``scalar`` at
``scalar_lr``). Every ``EvalPlan.every`` epochs and in the last epochs: test accuracy at the current
p, clean and certified accuracy of the p = ∞ net (test set, and train set if asked), PGD late in
training; after training: PGD-100 and certification at p = ∞ with the certified ⊆ PGD-robust check.

Run directory (``certcore.runlog``): ``log.txt``; ``train.log`` [epoch, loss, acc, certified_fake, p,
eps, lam, lr]; ``test.log`` [epoch, p, acc, inf_acc, certified, pgd_acc, (train_inf_acc,
train_certified)]; the v2 tables ``train_inf.log`` / ``test_inf.log`` [epoch, acc, certified];
TensorBoard events; ``checkpoint.pt`` every ``checkpoint_every`` epochs. Accuracies are in percent.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from certcore.checkpoint import CheckpointError, load_checkpoint
from certcore.distributed import all_reduce_mean, cleanup, init_distributed, world_size, wrap_ddp
from certcore.runlog import RunDirectory
from certcore.training import CHECKPOINT_NAME, FitResult, fit
from linfdist.certify import CertificationUnsoundError, EvalResult, certify_batch, eval_mode, pgd_robust
from linfdist.data import TensorData, load_data, synthetic_data
from linfdist.layers import at_p, set_p
from linfdist.models import build_model
from linfdist.recipes import PRESETS, TrainRecipe, recipe_to_plain

__all__ = [
    "Trainer",
    "TrainResult",
    "train",
    "evaluate_checkpoint",
    "make_optimizer",
    "checkpoint_spec",
    "main",
]


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Adam:
    """Adam(betas, eps) without weight decay; group 0: every parameter but ``scalar`` at ``lr``; group 1:
    ``scalar`` at ``scalar_lr`` (empty for models without it)."""
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if n.split(".")[-1] != "scalar"], "lr": recipe.lr},
        {"params": [p for n, p in named if n.split(".")[-1] == "scalar"], "lr": recipe.scalar_lr},
    ]
    return torch.optim.Adam(groups, betas=recipe.betas, eps=recipe.adam_eps, weight_decay=0.0)


def checkpoint_spec(recipe: TrainRecipe, data: TensorData, seed: int) -> dict[str, Any]:
    return {
        "recipe": recipe_to_plain(recipe),
        "seed": seed,
        "input_shape": list(data.info.input_shape),
        "num_classes": data.info.num_classes,
        "synthetic_data": data.synthetic,
    }


def _sum_over_ranks(*counts: int) -> list[int]:
    if world_size() == 1:
        return list(counts)
    mean = all_reduce_mean(torch.tensor(counts, dtype=torch.float64))
    return [round(float(v) * world_size()) for v in mean]


class Trainer:
    """Model, optimizer, schedule and data of one run; ``train_one_epoch`` / ``evaluate`` for ``fit``."""

    def __init__(
        self,
        recipe: TrainRecipe,
        data: TensorData,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        run: RunDirectory | None = None,
    ):
        self.recipe = recipe
        self.data = data
        self.device = torch.device(device)
        self.seed = recipe.seed if seed is None else seed
        self.run = run
        torch.manual_seed(self.seed)  # the initial weights depend on the seed only
        self.model = build_model(recipe.model, data.info.input_shape, data.info.num_classes).to(self.device)
        self.net = wrap_ddp(self.model)
        self.optimizer = make_optimizer(self.model, recipe)
        self.base_lrs = [recipe.lr, recipe.scalar_lr]
        self.schedule = recipe.schedule(
            data.iters_per_epoch(recipe.batch_size), data.info.normalization.std[0]
        )
        self.eps_test = data.eps(recipe.eps_test)
        self.data_min = data.data_min.to(self.device)
        self.data_max = data.data_max.to(self.device)
        self.total = recipe.epochs.total

    # --- logging helpers --------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.run is not None:
            self.run.log(message)

    def _table(self, name: str, row: dict[str, float]) -> None:
        if self.run is not None:
            self.run.table(name, list(row)).log(row)

    def _progress(self, iterable, desc: str):
        return iterable if self.run is None else self.run.progress(iterable, desc=desc)

    # --- training ---------------------------------------------------------------------------------
    def apply_schedule(self, epoch: int, batch: int = 0):
        state = self.schedule.at(epoch, batch)
        set_p(self.model, state.p)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * state.lr_factor
        return state

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        r = self.recipe
        self.net.train()
        start = self.apply_schedule(epoch, 0)
        n = loss_sum = correct = cert = 0.0
        batches = self.data.train_batches(r.batch_size, epoch, self.seed, r.augment, self.device)
        total = self.data.iters_per_epoch(r.batch_size)
        for i, (x, y) in enumerate(self._progress(batches, f"epoch {epoch + 1}/{self.total}")):
            if i >= total:
                raise RuntimeError(
                    f"more batches than the schedule expects ({total}); a bug in the data shards"
                )
            st = self.apply_schedule(epoch, i)
            logits, worst = self.net(x, targets=y, eps=st.eps, data_min=self.data_min, data_max=self.data_max)
            loss = r.loss(logits, worst, y, st.lam)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss {float(loss)} at epoch {epoch}, batch {i} (p={st.p:g})"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                b = y.numel()
                n += b
                loss_sum += float(loss) * b
                correct += float((logits.argmax(1) == y).sum())
                others = worst.scatter(1, y.view(-1, 1), -math.inf)
                cert += float((others.amax(1) < 0).sum())
        self._sync_buffers()
        n = max(n, 1.0)
        return {
            "loss": loss_sum / n,
            "acc": 100 * correct / n,
            "certified_fake": 100 * cert / n,
            "p": start.p,
            "eps": start.eps,
            "lam": start.lam,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's MeanShift running means (each rank updated them with its own batch
        means after DDP's broadcast), so that all ranks evaluate the model the checkpoint holds."""
        if world_size() > 1:
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    # --- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def accuracy_at_current_p(self, limit: int | None) -> float:
        n = correct = 0
        with eval_mode(self.model):
            for x, y in self.data.test_batches(self.recipe.batch_size, limit, self.device):
                correct += int((self.model(x).argmax(1) == y).sum())
                n += y.numel()
        n, correct = _sum_over_ranks(n, correct)
        return 100.0 * correct / max(n, 1)

    def certify(self, batches, *, pgd_steps: int = 0, desc: str = "certify") -> EvalResult:
        """Clean / certified (/ PGD) counts at p = ∞ over ``batches``, summed over ranks."""
        n = clean = cert = robust = 0
        for x, y in self._progress(batches, desc):
            correct, certified = certify_batch(self.model, x, y, self.eps_test, self.data_min, self.data_max)
            n += y.numel()
            clean += int(correct.sum())
            cert += int(certified.sum())
            if pgd_steps > 0:
                with at_p(self.model, math.inf):
                    ok = pgd_robust(
                        self.model,
                        x,
                        y,
                        self.eps_test,
                        self.data_min,
                        self.data_max,
                        steps=pgd_steps,
                        restarts=self.recipe.eval.pgd_restarts,
                    )
                broken = certified & ~ok
                if bool(broken.any()):
                    raise CertificationUnsoundError(
                        f"{int(broken.sum())} test sample(s) certified at eps={self.recipe.eps_test:g} "
                        "were broken "
                        f"by PGD-{pgd_steps}: the certificate is unsound"
                    )
                robust += int(ok.sum())
        n, clean, cert, robust = _sum_over_ranks(n, clean, cert, robust)
        return EvalResult(n, clean, cert, robust if pgd_steps > 0 else None)

    def evaluate(self, epoch: int) -> dict[str, float] | None:
        plan, bs = self.recipe.eval, self.recipe.batch_size
        if not plan.evaluates(epoch, self.total):
            return None
        p = self.schedule.p_at(epoch, self.data.iters_per_epoch(bs) - 1)
        out: dict[str, float] = {"p": p, "acc": self.accuracy_at_current_p(plan.test_subset)}
        test = self.certify(self.data.test_batches(bs, plan.test_subset, self.device), desc="certify test")
        out.update(inf_acc=test.clean_acc, certified=test.certified_acc, pgd_acc=math.nan)
        self._table("test_inf.log", {"epoch": epoch, "acc": test.clean_acc, "certified": test.certified_acc})
        if plan.certify_train:
            tr = self.certify(
                self.data.train_eval_batches(bs, plan.train_cert_subset, self.device), desc="certify train"
            )
            out.update(train_inf_acc=tr.clean_acc, train_certified=tr.certified_acc)
            self._table("train_inf.log", {"epoch": epoch, "acc": tr.clean_acc, "certified": tr.certified_acc})
        if plan.attacks(epoch, self.total):
            res = self.certify(
                self.data.test_batches(bs, plan.pgd_subset, self.device),
                pgd_steps=plan.pgd_steps,
                desc=f"PGD-{plan.pgd_steps}",
            )
            out["pgd_acc"] = res.pgd_acc  # type: ignore[assignment]
            self.log(f"adversarial attack acc {res.pgd_acc:.4f}")
        return out

    def final_evaluation(self) -> dict[str, float]:
        """After training (p from the schedule at epoch T, i.e. ∞): clean, PGD and certified accuracy."""
        plan, bs = self.recipe.eval, self.recipe.batch_size
        self.apply_schedule(self.total, 0)
        began = time.perf_counter()
        metrics: dict[str, float] = {}
        if plan.pgd_steps > 0:
            res = self.certify(
                self.data.test_batches(bs, plan.pgd_subset, self.device),
                pgd_steps=plan.pgd_steps,
                desc=f"PGD-{plan.pgd_steps}",
            )
            metrics["pgd_acc"] = res.pgd_acc  # type: ignore[assignment]
            self.log(
                f"adversarial attack acc {res.pgd_acc:.4f} (PGD-{plan.pgd_steps}, step eps/4, "
                f"{res.n} test samples; every certified sample survived)"
            )
        test = self.certify(self.data.test_batches(bs, None, self.device), desc="certify test")
        metrics = {"clean_acc": test.clean_acc, **metrics, "certified_acc": test.certified_acc}
        self._table(
            "test_inf.log", {"epoch": self.total, "acc": test.clean_acc, "certified": test.certified_acc}
        )
        self.log(
            f"Epoch {self.total}: clean acc {test.clean_acc:.4f}   certified acc {test.certified_acc:.4f} "
            f"({test.n} test samples, eps {self.recipe.eps_test:g}; {time.perf_counter() - began:.1f} s)"
        )
        return metrics


@dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]
    fit: FitResult | None
    trainer: Trainer


def train(
    recipe: TrainRecipe,
    data: TensorData,
    run_dir: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train ``recipe`` on ``data`` into ``run_dir`` (resumable), then certify and attack the result."""
    seed = recipe.seed if seed is None else seed
    with RunDirectory(run_dir, resume=resume, overwrite=overwrite) as run:
        trainer = Trainer(recipe, data, device=device, seed=seed, run=run)
        if not resume:
            run.log(f"recipe: {recipe}")
            run.log(
                f"data: {data.info.name}{' (synthetic)' if data.synthetic else ''}, "
                f"{len(data.y_train)} train / "
                f"{len(data.y_test)} test, normalisation {data.info.normalization}, eps_train "
                f"{recipe.eps_train:g} -> {data.eps(recipe.eps_train):.5g}, eps_test {recipe.eps_test:g} -> "
                f"{trainer.eps_test:.5g} (normalised); {world_size()} process(es), device {trainer.device}"
            )
            run.log(f"model: {trainer.model}")
            run.log(f"number of params: {sum(p.numel() for p in trainer.model.parameters())}")
        result = fit(
            run,
            model=trainer.net,
            optimizer=trainer.optimizer,
            epochs=recipe.epochs.total,
            train_one_epoch=trainer.train_one_epoch,
            evaluate=trainer.evaluate,
            spec=checkpoint_spec(recipe, data, seed),
            resume=resume,
            checkpoint_every=recipe.checkpoint_every,
            seed=seed,
            stop_after_epoch=stop_after_epoch,
        )
        if not result.finished:
            return TrainResult({}, result, trainer)
        run.log("============Training completes===========")
        metrics = trainer.final_evaluation()
    return TrainResult(metrics, result, trainer)


def evaluate_checkpoint(
    recipe: TrainRecipe,
    data: TensorData,
    checkpoint: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    run_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Certify (and attack) a trained checkpoint of ``recipe`` without training.

    A checkpoint written for another model config or input shape is a :class:`CheckpointError` that
    names what differs.
    """
    path = Path(checkpoint)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, truncated, or not a torch file
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {error})"
        ) from error
    stored = payload.get("spec") if isinstance(payload, dict) else None
    if not isinstance(stored, dict) or "recipe" not in stored:
        raise CheckpointError(
            f"{path} is not a linfdist checkpoint (no training spec inside); expected the "
            f"{CHECKPOINT_NAME} of a linfdist run"
        )
    del payload
    want = checkpoint_spec(recipe, data, 0)
    got_model = stored["recipe"].get("model") if isinstance(stored["recipe"], dict) else None
    for key, have, need in (
        ("model", got_model, want["recipe"]["model"]),
        ("input_shape", stored.get("input_shape"), want["input_shape"]),
        ("num_classes", stored.get("num_classes"), want["num_classes"]),
    ):
        if have != need:
            raise CheckpointError(
                f"{path} was trained with {key} {have!r}, but this recipe needs {need!r}; "
                "evaluate it with the table (recipe) that trained it"
            )
    run = RunDirectory(run_dir, overwrite=False) if run_dir is not None else None
    try:
        trainer = Trainer(recipe, data, device=device, run=run)
        info = load_checkpoint(path, model=trainer.model, restore_rng=False)
        trainer.log(f"evaluating {path} (epoch {info.epoch}, written by {info.versions})")
        return trainer.final_evaluation()
    finally:
        if run is not None:
            run.close()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m linfdist.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--device", default=None, help="default: this rank's GPU under torchrun+NCCL, else cuda/cpu"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--epochs", default=None, help="override e0,e1,e2,e3,T")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--synthetic", action="store_true", help="generated data instead of the real dataset")
    parser.add_argument("--eval-only", default=None, help="certify this checkpoint instead of training")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    from dataclasses import replace

    from linfdist.schedule import EpochSpec

    args = _parse_args(argv)
    recipe = PRESETS[args.preset]
    changes: dict[str, Any] = {}
    if args.epochs:
        changes["epochs"] = EpochSpec.parse(args.epochs)
    if args.width or args.depth:
        changes["model"] = replace(
            recipe.model, **{k: v for k, v in (("width", args.width), ("depth", args.depth)) if v}
        )
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    if args.train_subset:
        changes["train_subset"] = args.train_subset
    recipe = recipe.with_(**changes)
    info = init_distributed()
    device = args.device or info.device
    seed = recipe.seed if args.seed is None else args.seed
    try:
        if args.synthetic:
            data = synthetic_data(recipe.dataset, seed=seed)
        else:
            data = load_data(
                recipe.dataset,
                data_dir=args.data_dir,
                normalization=recipe.normalization,
                train_subset=recipe.train_subset,
                seed=seed,
            )
        if args.eval_only:
            return evaluate_checkpoint(recipe, data, args.eval_only, device=device)
        result = train(
            recipe, data, args.out, device=device, seed=seed, resume=args.resume, overwrite=args.overwrite
        )
        return result.metrics
    finally:
        cleanup()


if __name__ == "__main__":
    main()
