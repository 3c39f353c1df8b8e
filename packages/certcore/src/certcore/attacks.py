"""Projected gradient descent (PGD) attacks in ℓ∞ and ℓ2.

    >>> x_adv = pgd(model, x, y, eps=8 / 255, steps=100, data_min=0.0, data_max=1.0)   # step eps/4
    >>> robust = model(x_adv).argmax(1) == y

Each step moves by ``step_size`` along ``sign(grad)`` (ℓ∞) or ``grad / ||grad||_2`` (ℓ2), then projects
onto the ε-ball around ``x`` and onto the data range ``[data_min, data_max]``. ``random_start`` draws the
start uniformly from the ball (or calls a user function, e.g. the ℓ∞-dist recipe's clipped Gaussian).
Over all restarts *and* all iterates, each sample keeps its worst point: a successful one (misclassified;
for ``targeted``, classified as the target) first, then the highest loss.

Side effects: none. The model runs in whatever mode it is in (call ``model.eval()`` for evaluation);
its buffers (BatchNorm running statistics) are restored afterwards and no parameter ``.grad`` is
touched (gradients are taken with respect to the input only). ``fn`` must treat samples independently
(a train-mode BatchNorm couples them; the attack still runs but each sample's objective then depends
on the rest of the batch).

:func:`pgd_bound_attack` pushes an output coordinate of any function up or down; the soundness kit
uses it to search for points outside claimed bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certcore.bounds._checks import as_eps, check_batched, check_tensor, data_range, parse_norm

__all__ = ["margin_loss", "pgd", "pgd_bound_attack"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def margin_loss(logits: Tensor, y: Tensor, targeted: bool = False) -> Tensor:
    """Per-sample CW margin to maximize: ``max_{j≠y} z_j - z_y`` (targeted: ``z_t - max_{j≠t} z_j``)."""
    z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return z_y - others if targeted else others - z_y


@contextmanager
def _no_side_effects(fn: object):
    """Restore an ``nn.Module``'s buffers (BatchNorm statistics) after the attack."""
    if not isinstance(fn, nn.Module):
        yield
        return
    saved = [(b, b.detach().clone()) for b in fn.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _per_sample_norm(t: Tensor) -> Tensor:
    """ℓ2 norm of each sample, shaped (B, 1, ..., 1)."""
    return t.flatten(1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


class _Setup:
    """Validated inputs of one attack: the clean point, ε, the box it may move in, step size."""

    def __init__(self, x, eps, norm, steps, step_size, restarts, data_min, data_max):
        check_tensor(x, "x")
        check_batched(x, "x")
        self.norm = parse_norm(norm)
        self.steps = _check_int(steps, "steps", 0)
        self.restarts = _check_int(restarts, "restarts", 1)
        self.eps = as_eps(eps, x)
        if self.norm == "2" and self.eps.numel() > 1:
            if self.eps.dim() != x.dim() or self.eps.shape[0] != x.shape[0] or self.eps[0].numel() != 1:
                raise ValueError(
                    "for norm='2', eps must be a scalar or per-sample (B, 1, ..., 1), "
                    f"got shape {tuple(self.eps.shape)}"
                )
        self.lo, self.hi, self.x = data_range(x.detach(), data_min, data_max)
        if step_size is None:
            self.step = self.eps / 4
        else:
            self.step = as_eps(step_size, x, "step_size")
        if self.norm == "inf":
            self.box_lo = self.x - self.eps if self.lo is None else torch.maximum(self.x - self.eps, self.lo)
            self.box_hi = self.x + self.eps if self.hi is None else torch.minimum(self.x + self.eps, self.hi)

    def project(self, x_adv: Tensor) -> Tensor:
        if self.norm == "inf":
            return torch.minimum(torch.maximum(x_adv, self.box_lo), self.box_hi)
        delta = x_adv - self.x
        norms = _per_sample_norm(delta)
        factor = torch.where(norms > self.eps, self.eps / norms.clamp_min(1e-30), torch.ones_like(norms))
        x_adv = self.x + delta * factor
        # clamping to the data range (which contains x) only shrinks |delta_i|: the point stays in the ball
        if self.lo is None and self.hi is None:
            return x_adv
        return x_adv.clamp(min=self.lo, max=self.hi)

    def start(self, random_start, generator) -> Tensor:
        x = self.x
        if callable(random_start):
            delta = random_start(x, self.eps)
            if not isinstance(delta, Tensor) or delta.shape != x.shape:
                raise ValueError("random_start(x, eps) must return a delta tensor of the shape of x")
            return self.project(x + delta.to(x.dtype))
        if not random_start:
            return x.clone()
        if self.norm == "inf":
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            return self.project(x + (2 * u - 1) * self.eps)
        g = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        direction = g / _per_sample_norm(g).clamp_min(1e-30)
        d = x[0].numel()
        r = torch.rand(
            (x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, dtype=x.dtype, device=x.device
        )
        return self.project(x + direction * self.eps * r.pow(1.0 / d))

    def ascend(self, x_adv: Tensor, grad: Tensor) -> Tensor:
        if self.norm == "inf":
            return self.project(x_adv + self.step * grad.sign())
        return self.project(x_adv + self.step * grad / _per_sample_norm(grad).clamp_min(1e-30))


def _run(setup: _Setup, evaluate, random_start, generator) -> Tensor:
    """Maximise ``evaluate(x) -> (score (B,), success (B,) bool or None)``; keep each sample's worst
    iterate."""
    x = setup.x
    best_x = x.clone()
    best_score = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
    best_succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)

    def keep(x_cur: Tensor, score: Tensor, succ: Tensor | None) -> None:
        nonlocal best_x, best_score, best_succ
        score = score.detach()
        score = torch.where(torch.isnan(score), torch.full_like(score, -math.inf), score)
        succ = torch.zeros_like(best_succ) if succ is None else succ.detach().bool()
        better = (succ & ~best_succ) | ((succ == best_succ) & (score > best_score))
        best_x = torch.where(better.reshape(view), x_cur.detach(), best_x)
        best_score = torch.where(better, score, best_score)
        best_succ = best_succ | succ

    for _ in range(setup.restarts):
        x_adv = setup.start(random_start, generator)
        for _ in range(setup.steps):
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                score, succ = evaluate(x_adv)
                (grad,) = torch.autograd.grad(score.sum(), x_adv, allow_unused=True)
            keep(x_adv, score, succ)
            if grad is None:  # the objective does not depend on the input
                break
            x_adv = setup.ascend(x_adv.detach(), grad)
        with torch.no_grad():
            score, succ = evaluate(x_adv.detach())
        keep(x_adv, score, succ)
    return best_x


def pgd(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    norm: object = "inf",
    steps: int = 100,
    step_size: float | Tensor | None = None,
    restarts: int = 1,
    random_start: bool | Callable[[Tensor, Tensor], Tensor] = True,
    data_min: float | Tensor | None = None,
    data_max: float | Tensor | None = None,
    loss: str | LossFn = "ce",
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PGD on a classifier; returns ``x_adv`` (detached, same shape/dtype as ``x``).

    ``eps``: float or tensor broadcastable to ``x`` (ℓ2: scalar or per sample). ``step_size`` defaults
    to ``eps / 4`` (ℓ∞-dist recipe: 100 steps of eps/4). ``loss``: ``"ce"`` (cross-entropy), ``"margin"``
    (CW margin, :func:`margin_loss`) or ``loss(logits, y) -> (B,)`` to maximize. ``targeted=True``: ``y``
    holds target classes; the built-in losses are flipped to reach them and success means "classified
    as the target". ``random_start``: ``True`` (uniform in the ball), ``False``, or
    ``random_start(x, eps) -> delta``. ``generator`` seeds the random starts.
    """
    setup = _Setup(x, eps, norm, steps, step_size, restarts, data_min, data_max)
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"y must be an integer tensor of class indices, got {getattr(y, 'dtype', type(y))}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) (one label per sample), got {tuple(y.shape)}")
    y = y.to(device=x.device, dtype=torch.long)
    if isinstance(loss, str):
        if loss not in ("ce", "margin"):
            raise ValueError(f"loss must be 'ce', 'margin' or a callable, got {loss!r}")
        name = loss

        def loss_fn(logits: Tensor, labels: Tensor) -> Tensor:
            if name == "ce":
                ce = F.cross_entropy(logits, labels, reduction="none")
                return -ce if targeted else ce
            return margin_loss(logits, labels, targeted)
    elif callable(loss):
        loss_fn = loss
    else:
        raise TypeError(f"loss must be 'ce', 'margin' or a callable, got {type(loss).__name__}")

    checked = False

    def evaluate(x_cur: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal checked
        logits = model(x_cur)
        if not checked:
            if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(
                    f"model must return logits of shape (B, K) = ({x.shape[0]}, K), got "
                    f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
                )
            if bool(((y < 0) | (y >= logits.shape[1])).any()):
                raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
            checked = True
        value = loss_fn(logits, y)
        if value.shape != (x.shape[0],):
            raise ValueError(
                f"loss must return one value per sample, shape ({x.shape[0]},), got {tuple(value.shape)}"
            )
        pred = logits.argmax(dim=1)
        success = pred == y if targeted else pred != y
        return value, success

    with _no_side_effects(model):
        return _run(setup, evaluate, random_start, generator)


def pgd_bound_attack(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    eps: float | Tensor,
    objective: int | Tensor | Callable[[Tensor], Tensor],
    *,
    maximize: bool = True,
    norm: object = "inf",
    steps: int = 100,
    step_size: float | Tensor | None = None,
    restarts: int = 1,
    random_start: bool | Callable[[Tensor, Tensor], Tensor] = True,
    data_min: float | Tensor | None = None,
    data_max: float | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Search the ε-ball (within the data range) for the point that maximizes (or minimizes) an output.

    ``objective``: an int ``k`` (coordinate ``k`` of each sample's flattened output), a ``(B,)`` long
    tensor (a coordinate per sample), or ``objective(output) -> (B,)``. Returns the best point found
    for each sample over all restarts and iterates.
    """
    setup = _Setup(x, eps, norm, steps, step_size, restarts, data_min, data_max)
    batch = x.shape[0]
    if isinstance(objective, bool):
        raise TypeError("objective must be an int, a (B,) index tensor or a callable")
    if isinstance(objective, int):
        index = torch.full((batch,), objective, dtype=torch.long, device=x.device)
    elif isinstance(objective, Tensor):
        if objective.dtype.is_floating_point or objective.shape != (batch,):
            raise ValueError(
                f"an index objective must be a ({batch},) integer tensor, got {objective.dtype} "
                f"{tuple(objective.shape)}"
            )
        index = objective.to(device=x.device, dtype=torch.long)
    elif callable(objective):
        index = None
    else:
        raise TypeError(
            f"objective must be an int, a (B,) index tensor or a callable, got {type(objective).__name__}"
        )
    sign = 1.0 if maximize else -1.0

    def evaluate(x_cur: Tensor) -> tuple[Tensor, None]:
        out = fn(x_cur)
        if index is None:
            value = objective(out)
        else:
            flat = out.reshape(batch, -1)
            if bool(((index < 0) | (index >= flat.shape[1])).any()):
                raise ValueError(
                    f"output coordinate out of range: outputs have {flat.shape[1]} entries per sample"
                )
            value = flat.gather(1, index.unsqueeze(1)).squeeze(1)
        if not isinstance(value, Tensor) or value.shape != (batch,):
            raise ValueError(f"objective must give one value per sample, shape ({batch},)")
        return sign * value, None

    with _no_side_effects(fn):
        return _run(setup, evaluate, random_start, generator)
