"""Certification at p = ∞ (IBP through the net, and the 2ε margin rule), and PGD evaluation.

``certify_batch`` switches every distance layer to ``p = ∞`` and eval mode for the call and
propagates the clipped ε-box ``[max(x − ε, data_min), min(x + ε, data_max)]`` through the whole net:
the distance layers with certcore's exact interval op, the MLP head of ``HybridModel`` by IBP.
A sample is certified iff ``U(z_j − z_y) < 0`` for every ``j ≠ y``.

For a pure ℓ∞-distance MLP (``MLPModel``) the same certificate follows from 1-Lipschitzness:
``z_y − max_{j≠y} z_j > 2ε`` on the unscaled logits (``margin_certify``). IBP is never looser.

``evaluate`` runs clean / certified / PGD over a loader and, when PGD runs, checks that every
certified sample survives PGD: a certified sample that PGD breaks raises
:class:`CertificationUnsoundError` — a sound certifier cannot be wrong about that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from certcore.attacks import pgd
from linfdist.layers import at_p
from linfdist.models import MLPModel

__all__ = [
    "CertificationUnsoundError",
    "EvalResult",
    "eval_mode",
    "certify_batch",
    "margin_certify",
    "pgd_robust",
    "v2_random_start",
    "evaluate",
]


class CertificationUnsoundError(RuntimeError):
    """A sample was counted as certified, yet an attack found an adversarial example for it."""


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block; every submodule's own training flag is restored afterwards."""
    state = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, s in state:
            m.train(s)


def _certified_from_worst(worst: Tensor, targets: Tensor) -> Tensor:
    others = worst.scatter(1, targets.view(-1, 1), -math.inf)
    return others.amax(dim=1) < 0


@torch.no_grad()
def certify_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    data_min: Tensor | float | None,
    data_max: Tensor | float | None,
) -> tuple[Tensor, Tensor]:
    """``(correct, certified)`` boolean masks for one batch, at ``p = ∞`` in eval mode.

    ``eps``, ``data_min``, ``data_max`` are in the model's (normalised) input units. With
    ``data_min``/``data_max`` = None the box is not clipped (still sound, possibly looser).
    """
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"certification needs a finite eps > 0; got {eps}")
    net = _unwrap(model)
    with at_p(net, math.inf), eval_mode(net):
        lo = -math.inf if data_min is None else data_min
        hi = math.inf if data_max is None else data_max
        logits, worst = net(x, targets=y, eps=eps, data_min=lo, data_max=hi)
    correct = logits.argmax(dim=1) == y
    certified = _certified_from_worst(worst, y)
    if bool((certified & ~correct).any()):
        raise CertificationUnsoundError(
            "a sample was certified although the clean prediction is wrong: the bounds do not contain the "
            "clean logits (a bug in the bound propagation)"
        )
    return correct, certified


@torch.no_grad()
def margin_certify(model: MLPModel, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """The 2ε rule for an all-ℓ∞-distance ``MLPModel`` at p = ∞: ``z_y − max_{j≠y} z_j > 2ε``."""
    net = _unwrap(model)
    if not isinstance(net, MLPModel):
        raise TypeError(
            f"the 2ε margin rule holds for MLPModel only (1-Lipschitz logits); got {type(net).__name__}"
        )
    with at_p(net, math.inf), eval_mode(net):
        z = net.distance_logits(x)
    z_y = z.gather(1, y.view(-1, 1)).squeeze(1)
    runner_up = z.scatter(1, y.view(-1, 1), -math.inf).amax(dim=1)
    return z_y - runner_up > 2 * eps


def v2_random_start(x: Tensor, eps: Tensor) -> Tensor:
    """The v2 attack's start: ``N(0, (ε/4)²)`` noise clipped to ``[−ε/2, ε/2]`` (then projected by PGD)."""
    return torch.maximum(torch.minimum(torch.randn_like(x) * (eps / 4), eps / 2), -eps / 2)


def pgd_robust(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    data_min: Tensor | float,
    data_max: Tensor | float,
    *,
    steps: int = 100,
    step_size: float | None = None,
    restarts: int = 1,
) -> Tensor:
    """Boolean mask of samples still classified correctly after ℓ∞ PGD (v2: 100 steps of ε/4 on the
    cross-entropy, from :func:`v2_random_start`; each sample keeps its worst iterate)."""
    net = _unwrap(model)
    with eval_mode(net):
        x_adv = pgd(
            net,
            x,
            y,
            eps,
            norm="linf",
            steps=steps,
            step_size=eps / 4 if step_size is None else step_size,
            restarts=restarts,
            random_start=v2_random_start,
            data_min=data_min,
            data_max=data_max,
        )
        with torch.no_grad():
            return net(x_adv).argmax(dim=1) == y


@dataclass(frozen=True)
class EvalResult:
    """Counts over an evaluation set; accuracies in percent."""

    n: int
    clean: int
    certified: int
    pgd: int | None = None

    @property
    def clean_acc(self) -> float:
        return 100.0 * self.clean / max(self.n, 1)

    @property
    def certified_acc(self) -> float:
        return 100.0 * self.certified / max(self.n, 1)

    @property
    def pgd_acc(self) -> float | None:
        return None if self.pgd is None else 100.0 * self.pgd / max(self.n, 1)

    def as_dict(self) -> dict[str, float]:
        out = {"clean_acc": self.clean_acc, "certified_acc": self.certified_acc}
        if self.pgd is not None:
            out["pgd_acc"] = self.pgd_acc  # type: ignore[assignment]
        return out


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    eps: float,
    data_min: Tensor | float,
    data_max: Tensor | float,
    *,
    device: torch.device | str = "cpu",
    pgd_steps: int = 0,
    pgd_restarts: int = 1,
    progress=None,
) -> EvalResult:
    """Clean accuracy and certified accuracy at p = ∞ (and PGD accuracy if ``pgd_steps > 0``).

    Clean accuracy is that of the p = ∞ network (the certified one). With PGD, every certified
    sample must survive the attack, else :class:`CertificationUnsoundError`.
    """
    net = _unwrap(model)
    n = clean = certified = robust = 0
    for x, y in batches if progress is None else progress(batches):
        x, y = x.to(device), y.to(device)
        correct, cert = certify_batch(net, x, y, eps, data_min, data_max)
        n += y.numel()
        clean += int(correct.sum())
        certified += int(cert.sum())
        if pgd_steps > 0:
            with at_p(net, math.inf):
                ok = pgd_robust(net, x, y, eps, data_min, data_max, steps=pgd_steps, restarts=pgd_restarts)
            broken = cert & ~ok
            if bool(broken.any()):
                raise CertificationUnsoundError(
                    f"{int(broken.sum())} sample(s) certified at eps={eps:g} were broken by PGD-{pgd_steps}: "
                    "the certificate is unsound"
                )
            robust += int(ok.sum())
    return EvalResult(n, clean, certified, robust if pgd_steps > 0 else None)
