"""Certified training with IBP / CROWN-IBP / CROWN-IBP + loss fusion (auto_LiRPA's examples/vision
``simple_training.py`` and ``cifar_training.py``, lirpa.md §6), and its evaluation.

    python -m lirpa.training --dataset mnist --model cnn_4layer --eps 0.3 --method CROWN-IBP \\
        --epochs 20 --ramp-start 1 --ramp-length 10 --data-dir ../shared/data --out runs/mnist

Per batch: ε from ``SmoothedRamp`` (per batch, in epochs: 0 before ``ramp_start``, ``eps_train`` after
``ramp_start + ramp_length``); the ℓ∞ box ``x ± ε/std`` clipped to the normalised data range; margins
``C`` (``(B, n-1, n)``, rows ``e_y - e_j``). Robust loss: ``CE(-[0, lb], 0)`` with ``lb`` by IBP, or for
CROWN-IBP ``lb = clb·f + ilb·(1 - f)``, ``f = β_end + (1 - β_end)·(ε_max - ε)/ε_max`` (auto_LiRPA:
``β_end = 0``; CROWN is skipped when ``f = 0``); with loss fusion ``mean(log ub + m)`` of
``CrossEntropyWrapper`` (:mod:`lirpa.loss_fusion`). At ε = 0 the loss is the natural cross-entropy.

Evaluation (test set, ε = ``eps``): clean error, verified error ``any(lb < 0)`` by IBP and by CROWN-IBP,
PGD error (certcore.attacks.pgd, margin loss); a sample certified by either method but broken by PGD is a
soundness bug and raises :class:`SoundnessError`. Runs are resumable (certcore.training.fit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.attacks import pgd
from certcore.data import dataset_info, load_tensors
from certcore.schedules import SmoothedRamp, epoch_time
from certcore.seeding import epoch_generator
from certcore.training import fit
from lirpa.bounded_module import BoundedModule
from lirpa.bounded_tensor import BoundedTensor
from lirpa.loss_fusion import CrossEntropyWrapper, fused_robust_loss, margin_robust_loss
from lirpa.perturbations import PerturbationLpNorm
from lirpa.zoo import build_model

__all__ = ["TrainConfig", "TrainResult", "SoundnessError", "margin_matrix", "train", "evaluate", "main"]

Method = Literal["IBP", "CROWN-IBP", "CROWN-IBP+loss-fusion"]
METHODS = ("IBP", "CROWN-IBP", "CROWN-IBP+loss-fusion")


class SoundnessError(AssertionError):
    """A sample counted as certified was broken by an attack (or misclassified at its centre)."""


@dataclass(frozen=True)
class TrainConfig:
    """One certified-training run. ``eps``: test radius, ``eps_train``: training radius (pixels in [0, 1]).

    ``dataset``: ``mnist``, ``cifar10``, ``tinyimagenet`` (read from ``data_dir``), or ``synthetic-<name>``
    (generated class-dependent images of that dataset's shape; ``n_train``/``n_test`` of them).
    ``ramp_start``/``ramp_length``/``ramp_mid``: ``SmoothedRamp`` in epochs (auto_LiRPA's ``start=S``
    (1-based) is ``ramp_start = S - 1``). ``beta_end``: floor of the CROWN-IBP factor ``f``.
    ``train_subset``/``test_subset``: use the first N samples (None: all)."""

    dataset: str = "mnist"
    model: str = "cnn_4layer"
    eps: float = 0.3
    eps_train: float = 0.4
    method: Method = "CROWN-IBP"
    batch: int = 256
    lr: float = 5e-4
    epochs: int = 100
    milestones: tuple[int, ...] = (50, 75)
    gamma: float = 0.1
    grad_clip: float = 10.0
    ramp_start: float = 0.0
    ramp_length: float = 60.0
    ramp_mid: float = 0.25
    beta_end: float = 0.0
    seed: int = 0
    data_dir: str | None = None
    normalization: str = "lirpa"
    augment: bool = True
    train_subset: int | None = None
    test_subset: int | None = None
    n_train: int = 512
    n_test: int = 256
    pgd_steps: int = 20
    eval_every: int = 1
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("eps", "eps_train", "lr", "ramp_start", "ramp_length", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0.0 <= self.beta_end <= 1.0:
            raise ValueError(f"beta_end must lie in [0, 1], got {self.beta_end}")
        for name in ("batch", "epochs", "eval_every", "checkpoint_every", "n_train", "n_test"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    @property
    def base_dataset(self) -> str:
        return self.dataset.removeprefix("synthetic-")

    def with_(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class Data:
    """Pixels in [0, 1] (float32 or uint8) and labels; ``info`` normalises them."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    info: object


def synthetic_images(dataset: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Generated images of ``dataset``'s shape, in [0, 1]: one fixed random template per class plus noise
    (learnable and certifiable at small ε)."""
    info = dataset_info(dataset, "none")
    shape, classes = info.input_shape, min(info.num_classes, 10)
    g = torch.Generator().manual_seed(1234)
    templates = torch.rand(classes, *shape, generator=g)
    g.manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = (0.7 * templates[y] + 0.3 * torch.rand(n, *shape, generator=g)).clamp(0, 1)
    return x, y


def load_data(cfg: TrainConfig) -> Data:
    info = dataset_info(cfg.base_dataset, cfg.normalization)
    if cfg.dataset.startswith("synthetic-"):
        xtr, ytr = synthetic_images(cfg.base_dataset, cfg.n_train, cfg.seed)
        xte, yte = synthetic_images(cfg.base_dataset, cfg.n_test, cfg.seed + 1)
    else:
        xtr, ytr = load_tensors(cfg.base_dataset, "train", data_dir=cfg.data_dir)
        xte, yte = load_tensors(cfg.base_dataset, "test", data_dir=cfg.data_dir)
    if cfg.train_subset:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    if cfg.test_subset:
        xte, yte = xte[: cfg.test_subset], yte[: cfg.test_subset]
    return Data(xtr, ytr, xte, yte, info)


def margin_matrix(y: Tensor, n_classes: int) -> Tensor:
    """``C`` of shape ``(B, n-1, n)``: rows ``e_y - e_j`` for every ``j != y`` (auto_LiRPA's spec matrix)."""
    eye = torch.eye(n_classes, device=y.device)
    C = eye[y].unsqueeze(1) - eye.unsqueeze(0)
    keep = torch.ones(len(y), n_classes, dtype=torch.bool, device=y.device)
    keep[torch.arange(len(y)), y] = False
    return C[keep].reshape(len(y), n_classes - 1, n_classes)


def _box(info, x: Tensor, eps: float) -> BoundedTensor:
    lo, hi = info.linf_box(x, eps)
    return BoundedTensor(x, PerturbationLpNorm(norm=math.inf, x_L=lo, x_U=hi))


def eps_schedule(cfg: TrainConfig) -> SmoothedRamp:
    return SmoothedRamp(
        0.0, cfg.eps_train, cfg.ramp_start, cfg.ramp_start + max(cfg.ramp_length, 1e-9), mid=cfg.ramp_mid
    )


def crown_factor(cfg: TrainConfig, eps: float) -> float:
    """auto_LiRPA's ``f = (ε_max - ε)/ε_max``, floored at ``beta_end``."""
    if cfg.eps_train <= 0:
        return 1.0
    return cfg.beta_end + (1.0 - cfg.beta_end) * (cfg.eps_train - eps) / cfg.eps_train


def margin_lower_bounds(bm: BoundedModule, bx, C: Tensor, method: str, factor: float = 1.0) -> Tensor:
    """Margin lower bounds by IBP, or CROWN-IBP mixed with IBP by ``factor``."""
    ilb, _ = bm.compute_bounds(x=(bx,), C=C, method="IBP", bound_upper=False)
    if method == "IBP" or factor <= 0.0:
        return ilb
    clb, _ = bm.compute_bounds(x=(bx,), C=C, method="CROWN-IBP", bound_upper=False)
    return clb * factor + ilb * (1.0 - factor) if factor < 1.0 else clb


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    history: list = field(default_factory=list)


def train(cfg: TrainConfig, run_dir, *, data: Data | None = None, resume: bool = False,
          overwrite: bool = False, stop_after_epoch: int | None = None, device: str = "cpu") -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (logs, TensorBoard, checkpoint); returns the final test metrics."""
    data = data or load_data(cfg)
    info = data.info
    n_classes = info.num_classes
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, info.input_shape, n_classes).to(device)
    x0 = info.batch_transform(augment=False)(data.x_test[:2])
    bm = BoundedModule(model, x0.to(device))
    fused = cfg.method == "CROWN-IBP+loss-fusion"
    bm_loss = (
        BoundedModule(CrossEntropyWrapper(model), (x0.to(device), data.y_test[:2].to(device)),
                      bound_opts={"loss_fusion": True}) if fused else None
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.milestones), gamma=cfg.gamma)
    ramp = eps_schedule(cfg)
    transform = info.batch_transform(augment=cfg.augment)
    n = len(data.x_train)
    per_epoch = math.ceil(n / cfg.batch)

    def train_one_epoch(epoch: int) -> dict[str, float]:
        model.train()
        g = epoch_generator(cfg.seed, epoch)
        order = torch.randperm(n, generator=g)
        tot = {"loss": 0.0, "clean_err": 0.0, "verified_err": 0.0, "eps": 0.0}
        count = 0
        for b in range(per_epoch):
            idx = order[b * cfg.batch : (b + 1) * cfg.batch]
            x = transform(data.x_train[idx], generator=g).to(device)
            y = data.y_train[idx].to(device)
            eps = float(ramp(epoch_time(epoch, b, per_epoch)))
            logits = model(x)
            clean = F.cross_entropy(logits, y)
            if eps <= 1e-20:
                loss, verr = clean, 1.0
            else:
                bx = _box(info, x, eps)
                f = crown_factor(cfg, eps)
                if fused:
                    loss = fused_robust_loss(bm_loss, bx, y, "CROWN-IBP", crown_factor=f)
                    verr = 0.0
                else:
                    lb = margin_lower_bounds(bm, bx, margin_matrix(y, n_classes), cfg.method, f)
                    loss = margin_robust_loss(lb)
                    verr = float((lb < 0).any(1).float().mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            k = len(y)
            count += k
            tot["loss"] += float(loss.detach()) * k
            tot["clean_err"] += float((logits.argmax(1) != y).float().mean()) * k
            tot["verified_err"] += verr * k
            tot["eps"] = eps
        if fused:  # the fused loss bounds the CE, not the margins: no training verified error
            del tot["verified_err"]
        return {key: (v if key == "eps" else v / count) for key, v in tot.items()}

    def run_eval(epoch: int):
        if (epoch + 1) % cfg.eval_every != 0 and epoch != cfg.epochs - 1:
            return None
        return evaluate(model, data, cfg, device=device)

    run = Path(run_dir)
    result = fit(
        run, model=model, optimizer=opt, scheduler=sched, epochs=cfg.epochs,
        train_one_epoch=train_one_epoch, evaluate=run_eval, spec=cfg.to_json(), resume=resume,
        overwrite=overwrite, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
        stop_after_epoch=stop_after_epoch,
    )
    metrics = dict(result.history[-1].test or {}) if result.history else {}
    if result.finished and not metrics:
        metrics = evaluate(model, data, cfg, device=device)
    return TrainResult(run, metrics, list(result.history))


@torch.no_grad()
def _clean(model, x):
    return model(x)


def evaluate(model: nn.Module, data: Data, cfg: TrainConfig, *, device: str = "cpu",
             batch: int | None = None) -> dict[str, float]:
    """Test errors (fractions) at ε = ``cfg.eps``: ``clean_err``, ``ibp_verified_err``,
    ``crown_ibp_verified_err``, ``verified_err`` (the better of the two per sample), ``pgd_err``.
    Raises :class:`SoundnessError` when a certified sample is misclassified or broken by PGD."""
    info = data.info
    model.eval()
    batch = batch or cfg.batch
    x_all = info.batch_transform(augment=False)(data.x_test)
    n_classes = info.num_classes
    bm = BoundedModule(model, x_all[:2].to(device))
    sums = {"clean_err": 0.0, "ibp_verified_err": 0.0, "crown_ibp_verified_err": 0.0, "verified_err": 0.0,
            "pgd_err": 0.0}
    eps_n = info.eps_to_normalized(cfg.eps, per_channel=True).to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    for s in range(0, len(x_all), batch):
        x = x_all[s : s + batch].to(device)
        y = data.y_test[s : s + batch].to(device)
        correct = _clean(model, x).argmax(1) == y
        C = margin_matrix(y, n_classes)
        bx = _box(info, x, cfg.eps)
        with torch.no_grad():
            ilb, _ = bm.compute_bounds(x=(bx,), C=C, method="IBP", bound_upper=False)
            clb, _ = bm.compute_bounds(x=(bx,), C=C, method="CROWN-IBP", bound_upper=False)
        cert_i, cert_c = (ilb > 0).all(1), (clb > 0).all(1)
        cert = cert_i | cert_c
        if cfg.eps > 0:
            x_adv = pgd(model, x, y, eps_n, steps=cfg.pgd_steps, step_size=eps_n / 4, loss="margin",
                        data_min=info.data_min.to(device), data_max=info.data_max.to(device), generator=g)
            robust = _clean(model, x_adv).argmax(1) == y
        else:
            robust = correct
        bad = cert & ~(robust & correct)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise SoundnessError(
                f"test sample {s + i} is certified (IBP {bool(cert_i[i])}, CROWN-IBP {bool(cert_c[i])}, "
                f"margin lower bounds min {float(torch.maximum(ilb[i], clb[i]).min()):.4g}) but is "
                f"misclassified {'at its centre' if not bool(correct[i]) else 'at a PGD point'} "
                f"at eps={cfg.eps}"
            )
        sums["clean_err"] += float((~correct).sum())
        sums["ibp_verified_err"] += float((~cert_i).sum())
        sums["crown_ibp_verified_err"] += float((~cert_c).sum())
        sums["verified_err"] += float((~cert).sum())
        sums["pgd_err"] += float((~robust).sum())
    return {k: v / len(x_all) for k, v in sums.items()}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lirpa.training", description=__doc__.split("\n\n")[0])
    d = TrainConfig()
    p.add_argument("--dataset", default=d.dataset, help="mnist | cifar10 | tinyimagenet | synthetic-<name>")
    p.add_argument("--model", default=d.model, help="a lirpa.zoo model name (e.g. cnn_4layer, cnn_7layer_bn)")
    p.add_argument("--eps", type=float, default=d.eps, help="test radius (pixels in [0, 1])")
    p.add_argument("--eps-train", type=float, default=None, help="training radius (default: --eps)")
    p.add_argument("--method", choices=METHODS, default=d.method)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--milestones", type=int, nargs="*", default=list(d.milestones))
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--ramp-start", type=float, default=d.ramp_start, help="ε ramp start (epochs, 0-based)")
    p.add_argument("--ramp-length", type=float, default=d.ramp_length, help="ε ramp length (epochs)")
    p.add_argument("--ramp-mid", type=float, default=d.ramp_mid)
    p.add_argument("--beta-end", type=float, default=d.beta_end, help="floor of the CROWN-IBP factor")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every N epochs")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    a = _parse_args(argv)
    cfg = TrainConfig(
        dataset=a.dataset, model=a.model, eps=a.eps, eps_train=a.eps if a.eps_train is None else a.eps_train,
        method=a.method, batch=a.batch, lr=a.lr, epochs=a.epochs, milestones=tuple(a.milestones),
        grad_clip=a.grad_clip, ramp_start=a.ramp_start, ramp_length=a.ramp_length, ramp_mid=a.ramp_mid,
        beta_end=a.beta_end, seed=a.seed, data_dir=a.data_dir, train_subset=a.train_subset,
        test_subset=a.test_subset, augment=not a.no_augment, eval_every=a.eval_every,
    )
    result = train(cfg, a.out, resume=a.resume, overwrite=a.overwrite)
    print(json.dumps(result.metrics, indent=2))
    return result.metrics


if __name__ == "__main__":  # pragma: no cover
    main()
