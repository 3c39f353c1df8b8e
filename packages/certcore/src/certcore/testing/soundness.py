"""Soundness checks for bound functions and certificates (see the package docstring for examples)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from certcore.attacks import _no_side_effects, margin_loss, pgd, pgd_bound_attack
from certcore.bounds import Interval
from certcore.bounds._checks import as_eps, check_batched, check_tensor, data_range, parse_norm

__all__ = [
    "RobustnessReport",
    "SoundnessReport",
    "Violation",
    "check_bounds_sound",
    "check_certified_robust",
    "default_tolerance",
    "freeze_batch_stats",
]

BoundFn = Callable[[Interval], "Interval | tuple[Tensor, Tensor]"]
_MAX_ROWS = 4096  # replicated rows per forward pass when sampling and attacking


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(atol, rtol)`` used when none is given: float64 (1e-9, 1e-9); float32 (1e-5, 1e-5);
    other dtypes (1e-2, 1e-2)."""
    if dtype == torch.float64:
        return 1e-9, 1e-9
    if dtype == torch.float32:
        return 1e-5, 1e-5
    return 1e-2, 1e-2


@dataclass
class Violation:
    """One output value outside its bounds (``excess`` > 0 is beyond the bound by more than ``tol``)."""

    source: str  # "center", "uniform", "corner", "pgd-max", "pgd-min"
    sample: int  # index in the batch
    output_index: tuple[int, ...]  # index into the per-sample output
    side: str  # "upper" or "lower"
    value: float  # f(x')
    bound: float  # the violated bound
    excess: float  # |f(x') - bound| beyond the bound, minus the tolerance
    tol: float
    point: Tensor | None = field(default=None, repr=False)  # x' (detached)

    def describe(self) -> str:
        rel = ">" if self.side == "upper" else "<"
        return (
            f"f(x')[{self.sample}][{', '.join(map(str, self.output_index))}] = {self.value:.9g} {rel} "
            f"{self.side} bound {self.bound:.9g} by {abs(self.value - self.bound):.3g} "
            f"(tolerance {self.tol:.3g}), "
            f"found by {self.source}"
        )


@dataclass
class SoundnessReport:
    """What :func:`check_bounds_sound` saw. ``max_excess`` is the largest ``f - upper`` or ``lower - f``
    over all points (negative: every value was strictly inside); ``looseness`` is the mean fraction of
    the bound width not reached by any point found (0: tight, 1: nothing reached)."""

    ok: bool
    n_points: int
    n_violations: int
    max_excess: float
    worst: Violation | None
    mean_width: float
    looseness: float
    empirical: Interval  # elementwise min/max of the outputs seen
    bounds: Interval

    def __str__(self) -> str:
        head = "sound" if self.ok else f"UNSOUND ({self.n_violations} violating values)"
        s = (
            f"{head}: {self.n_points} points, max excess {self.max_excess:.3g}, "
            f"mean width {self.mean_width:.4g}, "
            f"looseness {self.looseness:.3f}"
        )
        return s if self.worst is None else f"{s}; worst: {self.worst.describe()}"


@dataclass
class RobustnessReport:
    """What :func:`check_certified_robust` saw. ``broken``: certified samples PGD misclassified."""

    ok: bool
    n_samples: int
    n_certified: int
    broken: list[int]
    clean_wrong: list[int]  # certified samples misclassified at the clean point
    min_certified_margin: float  # smallest z_y - max_{j≠y} z_j over certified samples' adversarial points
    pgd_accuracy: float | None  # over all samples, when attack_all=True

    def __str__(self) -> str:
        return (
            f"{'ok' if self.ok else 'FAILED'}: {self.n_certified}/{self.n_samples} certified, broken by PGD: "
            f"{self.broken}, clean-misclassified: {self.clean_wrong}, "
            f"min margin {self.min_certified_margin:.4g}"
        )


def _as_interval(result: object) -> Interval:
    if isinstance(result, Interval):
        lower, upper = result.lower, result.upper
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        lower, upper = result
    elif hasattr(result, "lower") and hasattr(result, "upper"):
        lower, upper = result.lower, result.upper
    else:
        raise TypeError(
            f"bound_fn must return an Interval or a (lower, upper) pair, got {type(result).__name__}"
        )
    for name, t in (("lower", lower), ("upper", upper)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"bound_fn's {name} bound must be a floating tensor, got {type(t).__name__}")
    if lower.shape != upper.shape:
        raise ValueError(
            f"bound_fn returned lower {tuple(lower.shape)} and upper {tuple(upper.shape)} of different shapes"
        )
    lower, upper = lower.detach(), upper.detach()
    if bool(torch.isnan(lower).any() | torch.isnan(upper).any()):
        raise AssertionError("bound_fn returned NaN bounds")
    return Interval(lower, upper, check=False)


def _rep(t: Tensor | None, k: int, batch: int, ndim: int) -> Tensor | None:
    """Repeat a per-sample tensor (leading batch dim) ``k`` times along dim 0; leave broadcast ones alone."""
    if t is None or k == 1 or t.dim() != ndim or t.shape[0] != batch or batch == 1:
        return t
    return t.repeat(k, *([1] * (ndim - 1)))


class _Tracker:
    """Compares outputs with the bounds, keeps the worst violation and the empirical output range."""

    def __init__(self, bounds: Interval, atol: float, rtol: float, keep_points: bool):
        self.bounds = bounds
        mag = torch.maximum(bounds.lower.abs(), bounds.upper.abs())
        mag = torch.where(torch.isfinite(mag), mag, torch.zeros_like(mag))
        self.tol = atol + rtol * mag
        self.emp_lo = torch.full_like(bounds.lower, math.inf)
        self.emp_hi = torch.full_like(bounds.lower, -math.inf)
        self.n_points = 0
        self.n_violations = 0
        self.max_excess = -math.inf
        self.worst: Violation | None = None
        self.worst_excess = -math.inf
        self.keep_points = keep_points

    def add(self, points: Tensor, out: Tensor, source: str) -> None:
        batch = self.bounds.shape[0]
        if out.shape[1:] != self.bounds.shape[1:] or out.shape[0] % batch:
            raise ValueError(
                f"fn returned shape {tuple(out.shape)}, but the bounds have shape {tuple(self.bounds.shape)}"
            )
        k = out.shape[0] // batch
        out = out.detach().to(self.bounds.dtype).reshape(k, *self.bounds.shape)
        nan = torch.isnan(out)
        out_f = torch.where(nan, torch.zeros_like(out), out)
        self.emp_lo = torch.minimum(self.emp_lo, out_f.amin(0))
        self.emp_hi = torch.maximum(self.emp_hi, out_f.amax(0))
        over = out - self.bounds.upper
        under = self.bounds.lower - out
        raw = torch.maximum(over, under)
        raw = torch.where(nan, torch.full_like(raw, math.inf), raw)
        self.n_points += out.shape[0] * batch
        self.max_excess = max(self.max_excess, float(raw.max()))
        excess = raw - self.tol
        bad = excess > 0
        self.n_violations += int(bad.sum())
        flat = excess.reshape(-1)
        i = int(flat.argmax())
        if flat[i] > 0 and float(flat[i]) > self.worst_excess:
            rep, rest = divmod(i, self.bounds.lower.numel())
            idx = tuple(int(v) for v in torch.unravel_index(torch.tensor(rest), self.bounds.shape))
            b, out_idx = idx[0], idx[1:]
            value = float(out[(rep, *idx)])
            side = (
                "upper"
                if float(over[(rep, *idx)]) >= float(under[(rep, *idx)]) or math.isnan(value)
                else "lower"
            )
            bound = float(self.bounds.upper[idx] if side == "upper" else self.bounds.lower[idx])
            pts = points.detach().reshape(k, batch, *points.shape[1:]) if self.keep_points else None
            self.worst = Violation(
                source,
                b,
                out_idx,
                side,
                value,
                bound,
                float(flat[i]),
                float(self.tol[idx]),
                pts[rep, b].clone() if pts is not None else None,
            )
            self.worst_excess = float(flat[i])


def _region_points(kind: str, x: Tensor, eps: Tensor, lo, hi, norm: str, k: int, gen) -> Tensor:
    """``k`` points per sample (stacked as k*B rows) in the region: uniform or at corners / on the sphere."""
    xs = x.repeat(k, *([1] * (x.dim() - 1)))
    eps_r = _rep(eps, k, x.shape[0], x.dim())
    lo_r, hi_r = _rep(lo, k, x.shape[0], x.dim()), _rep(hi, k, x.shape[0], x.dim())
    if norm == "inf":
        box_lo = xs - eps_r if lo_r is None else torch.maximum(xs - eps_r, lo_r)
        box_hi = xs + eps_r if hi_r is None else torch.minimum(xs + eps_r, hi_r)
        u = torch.rand(xs.shape, generator=gen, dtype=x.dtype, device=x.device)
        if kind == "corner":
            u = (u < 0.5).to(x.dtype)
        return box_lo + u * (box_hi - box_lo)
    g = torch.randn(xs.shape, generator=gen, dtype=x.dtype, device=x.device)
    g = g / g.flatten(1).norm(dim=1).clamp_min(1e-30).reshape(-1, *([1] * (x.dim() - 1)))
    if kind == "uniform":
        r = torch.rand((xs.shape[0],) + (1,) * (x.dim() - 1), generator=gen, dtype=x.dtype, device=x.device)
        g = g * r.pow(1.0 / x[0].numel())
    pts = xs + eps_r * g
    if lo_r is not None or hi_r is not None:
        pts = pts.clamp(min=lo_r, max=hi_r)
    return pts


def _chunks(total: int, batch: int) -> list[int]:
    """Split ``total`` replicas of a batch into chunks of at most ``_MAX_ROWS`` rows."""
    size = max(1, _MAX_ROWS // max(1, batch))
    return [min(size, total - i) for i in range(0, total, size)]


def _explore(
    fn,
    x,
    eps_t,
    lo,
    hi,
    norm_name,
    tracker,
    n_samples,
    pgd_steps,
    pgd_restarts,
    pgd_step_size,
    pgd_coords,
    gen,
) -> None:
    """Evaluate ``fn`` at the centre, sampled points and PGD points; record them in ``tracker``."""
    bounds = tracker.bounds
    batch = x.shape[0]
    with torch.no_grad():
        out0 = fn(x)
        if not isinstance(out0, Tensor) or out0.shape != bounds.shape:
            raise ValueError(
                f"bound_fn returned bounds of shape {tuple(bounds.shape)} but fn(x) has shape "
                f"{tuple(out0.shape) if isinstance(out0, Tensor) else type(out0).__name__}"
            )
        tracker.add(x, out0, "center")
        for kind in ("uniform", "corner"):
            for k in _chunks(n_samples, batch):
                pts = _region_points(kind, x, eps_t, lo, hi, norm_name, k, gen)
                tracker.add(pts, fn(pts), kind)

    n_out = bounds[0].lower.numel()
    if pgd_steps > 0 and pgd_restarts > 0:
        width = (bounds.upper - bounds.lower).reshape(batch, n_out).clamp_min(1e-30)
        for maximize in (True, False):
            if maximize:
                slack = (bounds.upper - tracker.emp_hi).reshape(batch, n_out) / width
            else:
                slack = (tracker.emp_lo - bounds.lower).reshape(batch, n_out) / width
            slack = torch.nan_to_num(slack, nan=0.0, posinf=math.inf).amin(0)
            order = torch.argsort(slack)
            coords = order if pgd_coords is None else order[:pgd_coords]
            rows_per_chunk = max(1, _MAX_ROWS // batch)
            for start in range(0, len(coords), rows_per_chunk):
                cs = coords[start : start + rows_per_chunk]
                k = len(cs)
                xs = x.repeat(k, *([1] * (x.dim() - 1)))
                index = cs.to(x.device).repeat_interleave(batch)
                x_adv = pgd_bound_attack(
                    fn,
                    xs,
                    _rep(eps_t, k, batch, x.dim()),
                    index,
                    maximize=maximize,
                    norm=norm_name,
                    steps=pgd_steps,
                    step_size=_rep(pgd_step_size, k, batch, x.dim())
                    if isinstance(pgd_step_size, Tensor)
                    else pgd_step_size,
                    restarts=pgd_restarts,
                    data_min=_rep(lo, k, batch, x.dim()),
                    data_max=_rep(hi, k, batch, x.dim()),
                    generator=gen,
                )
                with torch.no_grad():
                    tracker.add(x_adv, fn(x_adv), "pgd-max" if maximize else "pgd-min")


def check_bounds_sound(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    eps: float | Tensor,
    bound_fn: BoundFn,
    *,
    n_samples: int = 64,
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    pgd_step_size: float | Tensor | None = None,
    pgd_coords: int | None = 32,
    data_min: float | Tensor | None = None,
    data_max: float | Tensor | None = None,
    norm: object = "inf",
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> SoundnessReport:
    """Check ``lower - tol <= fn(x') <= upper + tol`` for points ``x'`` in the input region, where
    ``(lower, upper) = bound_fn(Interval.from_eps(x, eps, data_min, data_max, norm))`` and
    ``tol = atol + rtol * max(|lower|, |upper|)``.

    Points: the centre ``x``; ``n_samples`` uniform points and ``n_samples`` corners (ℓ∞: random vertices
    of the clipped box; ℓ2: random points on the sphere, clipped) per sample; and PGD points that
    maximize and minimize each output coordinate (the ``pgd_coords`` coordinates whose bounds the
    samples came closest to, ``None`` for all), ``pgd_steps`` steps and ``pgd_restarts`` restarts each.

    ``fn`` must treat samples independently (freeze train-mode BatchNorm with :func:`freeze_batch_stats`).
    Raises ``AssertionError`` naming the worst violation (value, bound, amount, sample, output index and
    how it was found) unless ``raise_on_failure=False``; returns a :class:`SoundnessReport`.
    """
    check_tensor(x, "x")
    check_batched(x, "x")
    norm_name = parse_norm(norm)
    eps_t = as_eps(eps, x)
    if norm_name == "2" and eps_t.numel() > 1 and (eps_t.dim() != x.dim() or eps_t[0].numel() != 1):
        raise ValueError("for norm='2', eps must be a scalar or per-sample (B, 1, ..., 1)")
    for name, v in (("n_samples", n_samples), ("pgd_steps", pgd_steps), ("pgd_restarts", pgd_restarts)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if pgd_coords is not None and (
        isinstance(pgd_coords, bool) or not isinstance(pgd_coords, int) or pgd_coords < 1
    ):
        raise ValueError(f"pgd_coords must be None (all outputs) or an int >= 1, got {pgd_coords!r}")
    d_atol, d_rtol = default_tolerance(x.dtype)
    atol = d_atol if atol is None else float(atol)
    rtol = d_rtol if rtol is None else float(rtol)
    if atol < 0 or rtol < 0 or math.isnan(atol) or math.isnan(rtol):
        raise ValueError(f"atol and rtol must be >= 0, got {atol}, {rtol}")
    lo, hi, x = data_range(x.detach(), data_min, data_max)
    box = Interval.from_eps(x, eps_t, lo, hi, norm=norm_name)
    bounds = _as_interval(bound_fn(box))
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    tracker = _Tracker(bounds, atol, rtol, keep_points=True)
    with _no_side_effects(fn):
        _explore(
            fn,
            x,
            eps_t,
            lo,
            hi,
            norm_name,
            tracker,
            n_samples,
            pgd_steps,
            pgd_restarts,
            pgd_step_size,
            pgd_coords,
            gen,
        )

    width_all = bounds.upper - bounds.lower
    finite = torch.isfinite(width_all) & (width_all > 0)
    reached = (tracker.emp_hi.clamp(max=bounds.upper) - tracker.emp_lo.clamp(min=bounds.lower)).clamp_min(0)
    looseness = float((1 - reached[finite] / width_all[finite]).mean()) if bool(finite.any()) else 0.0
    mean_width = (
        float(width_all[torch.isfinite(width_all)].mean())
        if bool(torch.isfinite(width_all).any())
        else math.inf
    )
    report = SoundnessReport(
        ok=tracker.n_violations == 0,
        n_points=tracker.n_points,
        n_violations=tracker.n_violations,
        max_excess=tracker.max_excess,
        worst=tracker.worst,
        mean_width=mean_width,
        looseness=looseness,
        empirical=Interval(tracker.emp_lo, tracker.emp_hi, check=False),
        bounds=bounds,
    )
    if raise_on_failure and not report.ok:
        raise AssertionError(f"bounds are unsound: {report}")
    return report


def freeze_batch_stats(model: nn.Module, clean: Tensor) -> nn.Module:
    """A copy of ``model`` in eval mode whose BatchNorm layers use the statistics of the batch ``clean``
    (as a train-mode forward on ``clean`` computes them, layer by layer). IBP with ``clean=`` bounds
    exactly this function; use it as ``fn`` when checking train-mode BatchNorm bounds. ``model`` is
    not modified."""
    frozen = copy.deepcopy(model)
    bns = [
        m
        for m in frozen.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
    ]
    seen: dict[nn.Module, Tensor] = {}
    handles = [
        bn.register_forward_pre_hook(lambda mod, inp: seen.__setitem__(mod, inp[0].detach())) for bn in bns
    ]
    try:
        with torch.no_grad():
            frozen(clean)
    finally:
        for h in handles:
            h.remove()
    for bn in bns:
        if bn not in seen:
            raise ValueError(f"a BatchNorm layer ({bn}) was not reached by model(clean)")
        act = seen[bn]
        dims = [0, *range(2, act.dim())]
        bn.track_running_stats = True
        bn.running_mean = act.mean(dim=dims)
        bn.running_var = act.var(dim=dims, unbiased=False)
    return frozen.eval()


def check_certified_robust(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    certified_mask: Tensor,
    *,
    norm: object = "inf",
    pgd_steps: int = 50,
    restarts: int = 2,
    step_size: float | Tensor | None = None,
    loss: str | Sequence[str] = ("margin", "ce"),
    data_min: float | Tensor | None = None,
    data_max: float | Tensor | None = None,
    atol: float | None = None,
    attack_all: bool = False,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> RobustnessReport:
    """Check that no sample marked certified is misclassified at its clean point or by PGD (each loss in
    ``loss``, ``restarts`` restarts of ``pgd_steps`` steps). A certified sample fails when its
    adversarial margin ``z_y - max_{j≠y} z_j`` is below ``-atol`` (ties within rounding are allowed).
    ``attack_all=True`` also attacks the uncertified samples and reports the PGD accuracy.
    Raises ``AssertionError`` listing the broken samples unless ``raise_on_failure=False``."""
    check_tensor(x, "x")
    check_batched(x, "x")
    batch = x.shape[0]
    if (
        not isinstance(certified_mask, Tensor)
        or certified_mask.dtype != torch.bool
        or certified_mask.shape != (batch,)
    ):
        raise ValueError(f"certified_mask must be a bool tensor of shape ({batch},)")
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.shape != (batch,):
        raise ValueError(f"y must be an integer tensor of shape ({batch},)")
    losses = [loss] if isinstance(loss, str) or callable(loss) else list(loss)
    atol = default_tolerance(x.dtype)[0] if atol is None else float(atol)
    eps_t = as_eps(eps, x)
    lo, hi, x = data_range(x.detach(), data_min, data_max)
    y = y.to(x.device).long()
    mask = certified_mask.to(x.device)
    sel = torch.ones_like(mask) if attack_all else mask
    idx = sel.nonzero().flatten()
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)

    def part(t):
        if t is None or t.dim() != x.dim() or t.shape[0] != batch or batch == 1:
            return t
        return t[idx]

    with _no_side_effects(model):
        with torch.no_grad():
            clean_margin = -margin_loss(model(x), y)
        worst_margin = clean_margin.clone()
        if len(idx) > 0:
            for lossname in losses:
                x_adv = pgd(
                    model,
                    x[idx],
                    y[idx],
                    part(eps_t),
                    norm=norm,
                    steps=pgd_steps,
                    step_size=part(step_size) if isinstance(step_size, Tensor) else step_size,
                    restarts=restarts,
                    data_min=part(lo),
                    data_max=part(hi),
                    loss=lossname,
                    generator=gen,
                )
                with torch.no_grad():
                    m = -margin_loss(model(x_adv), y[idx])
                worst_margin[idx] = torch.minimum(worst_margin[idx], m)
    clean_wrong = (mask & (clean_margin < -atol)).nonzero().flatten().tolist()
    broken = (mask & (worst_margin < -atol)).nonzero().flatten().tolist()
    n_cert = int(mask.sum())
    report = RobustnessReport(
        ok=not broken and not clean_wrong,
        n_samples=batch,
        n_certified=n_cert,
        broken=broken,
        clean_wrong=clean_wrong,
        min_certified_margin=float(worst_margin[mask].min()) if n_cert else math.inf,
        pgd_accuracy=float((worst_margin > 0).float().mean()) if attack_all else None,
    )
    if raise_on_failure and not report.ok:
        raise AssertionError(
            f"certificates contradicted: {report} "
            f"(samples {broken} are certified but PGD found misclassified points)"
        )
    return report
