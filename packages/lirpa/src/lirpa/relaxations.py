"""Elementwise linear relaxations of scalar activations, for CROWN (backward), forward mode and α-CROWN.

For a function f and a box [l, u] (elementwise), :class:`Relaxation` holds two lines with
``lw·x + lb <= f(x) <= uw·x + ub`` for every x in [l, u]. Notation: m = (l + u)/2; the *chord* is the
line through (l, f(l)) and (u, f(u)); the *tangent at d* is f(d) + f'(d)·(x - d).

relu, leaky_relu (negative slope a, 0 <= a < 1; relu is a = 0; f(x) = max(x, a·x))
    l >= 0: f(x) = x on both sides. u <= 0: f(x) = a·x on both sides. Unstable (l < 0 < u): upper = chord,
    slope a + (1-a)·u/(u-l), bias (1-a)·(-l)·u/(u-l). Lower = s·x with s in [a, 1], below f for every x:
    'adaptive' (default) s = 1 if the chord slope is > 0.5 else a (auto_LiRPA's rule, kept as is for leaky
    relu); 'same-slope' s = chord slope; 'one-lb' s = 1; 'zero-lb' s = a (0 for relu). auto_LiRPA's
    'zero-lb' computes ``lower_k = (upper_k >= 1.0)``; an unstable chord slope is < 1, so that is 0 too,
    except where u/(u-l) rounds to 1.0 (l tiny against u) and it gives 1. We implement the name: 0.
    With ``alpha`` (α-CROWN): s = clamp(alpha, a, 1); with 'same-slope' as well, the upper line takes the
    slope s too and passes through (l, a·l) if s >= chord slope, else through (u, u) (auto_LiRPA's
    optimised same-slope). Infinite bounds take the chord's limits: u = +inf: slope 1, bias (1-a)·(-l);
    l = -inf: slope a, bias (1-a)·u; both infinite: slope 1, bias +inf.

sigmoid, tanh (S-shaped: convex for x <= 0, concave for x >= 0)
    u <= 0: upper = chord, lower = tangent at m. l >= 0: lower = chord, upper = tangent at m.
    l < 0 < u: lower = chord if its slope k < f'(l); else tangent at min(d, m), where d in [l, 0] is the
    point whose tangent passes through (u, f(u)), found by bisection (see :func:`_s_shaped_lower` for
    the proof). The upper line is the mirror image (chord if k < f'(u), else tangent at max(d', m)).
    This is auto_LiRPA's default (with its "smoothness enhancement", the min/max with m), except that
    auto_LiRPA reads d from a table on a 0.01 grid (u rounded up to it); we solve for d at u itself, so the
    straddling tangents can differ slightly from auto_LiRPA's (both are sound).

exp (convex): upper = chord; lower = tangent at d = min(l + alpha·(u-l), l + 0.99), alpha = 0.5 by default,
    i.e. auto_LiRPA's min(m, l + 0.99) (the cap keeps the tangent >= 0.01·e^d > 0 on [l, u]).
    l = -inf: lower = 0, upper = e^u (the chord's limit); u = +inf or e^u overflowing: upper = +inf.

log (concave, needs l > 0): lower = chord, upper = tangent at m.
square, x**2 (convex): upper = chord, slope l + u, bias -l·u; lower = tangent at d = l + alpha·(u-l),
    alpha = 0.5 by default (d = m).
reciprocal, 1/x (needs 0 outside [l, u]): x > 0 (convex): upper = chord, slope -1/(l·u), bias 1/l + 1/u;
    lower = tangent at m, slope -1/m², bias 2/m. x < 0 (concave): the same two lines, sides swapped.

All functions: l == u gives the tangent at l on both sides (exact at the point; no 0/0). A line whose
coefficients overflow is replaced by the constant interval bound (min or max of f over [l, u]) or, if
that overflows too, by ±inf. relu, leaky_relu and exp accept infinite bounds; the others raise ValueError.
Everything is differentiable with respect to lower, upper and alpha (no in-place ops on the inputs), except
that the S-shaped tangent points d are found without gradient (auto_LiRPA looks them up in a table);
tangents at m do carry gradients. With ``alpha`` of a larger (broadcastable) shape, e.g. per spec as in
α-CROWN, the four tensors have the broadcast shape (the alpha-free ones as expanded views).

``check=False`` skips the value checks (NaN, order, domain), which synchronise with the device; the
caller then guarantees them. Type, shape and option checks always run.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch
from torch import Tensor

__all__ = [
    "RELAXATION_NAMES",
    "RELU_OPTIONS",
    "Relaxation",
    "alpha_bounds",
    "relax",
    "relax_exp",
    "relax_leaky_relu",
    "relax_log",
    "relax_reciprocal",
    "relax_relu",
    "relax_sigmoid",
    "relax_square",
    "relax_tanh",
]

RELU_OPTIONS = ("adaptive", "same-slope", "zero-lb", "one-lb")

_EXP_TANGENT_CAP = 0.99  # auto_LiRPA: the exp tangent point is at most l + 0.99
_BISECTION_STEPS = {torch.float64: 52, torch.float32: 30}


@dataclass(frozen=True)
class Relaxation:
    """lw·x + lb <= f(x) <= uw·x + ub for every x in [lower, upper], elementwise (all four have the shape of
    lower, or of its broadcast with alpha)."""

    lw: Tensor
    lb: Tensor
    uw: Tensor
    ub: Tensor


# ----------------------------------------------------------------------------------------------------------
# checks


def _first_index(mask: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(mask)[0])


def _check_bounds(lower: object, upper: object, fn: str, *, values: bool, allow_inf: bool) -> None:
    for name, t in (("lower", lower), ("upper", upper)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{fn}: {name} must have a floating dtype (float32 or float64), got {t.dtype}")
    assert isinstance(lower, Tensor) and isinstance(upper, Tensor)
    if lower.shape != upper.shape:
        raise ValueError(
            f"{fn}: lower and upper must have the same shape, "
            f"got {tuple(lower.shape)} and {tuple(upper.shape)}"
        )
    if lower.dtype != upper.dtype:
        raise TypeError(
            f"{fn}: lower and upper must have the same dtype, got {lower.dtype} and {upper.dtype}"
        )
    if lower.device != upper.device:
        raise ValueError(
            f"{fn}: lower and upper must be on the same device, got {lower.device} and {upper.device}"
        )
    if not values or lower.numel() == 0:
        return
    with torch.no_grad():
        nan = torch.isnan(lower) | torch.isnan(upper)
        if bool(nan.any()):
            raise ValueError(f"{fn}: bounds contain NaN; first at index {_first_index(nan)}")
        if not allow_inf:
            inf = torch.isinf(lower) | torch.isinf(upper)
            if bool(inf.any()):
                i = _first_index(inf)
                raise ValueError(
                    f"{fn} needs finite bounds (only relu, leaky_relu and exp accept infinite ones); "
                    f"got lower={float(lower[i])}, upper={float(upper[i])} at index {i}"
                )
        bad = lower > upper
        if bool(bad.any()):
            i = _first_index(bad)
            raise ValueError(
                f"{fn}: lower must be <= upper elementwise; first violation at index {i}: "
                f"lower={float(lower[i])} > upper={float(upper[i])}"
            )


def _check_option(option: object, fn: str) -> str:
    if option not in RELU_OPTIONS:
        raise ValueError(f"{fn}: unknown option {option!r}; expected one of {', '.join(RELU_OPTIONS)}")
    return str(option)


def _prepare_alpha(alpha: object, lower: Tensor, fn: str, values: bool) -> Tensor | None:
    if alpha is None:
        return None
    if isinstance(alpha, Real) and not isinstance(alpha, bool):
        alpha = torch.tensor(float(alpha), dtype=lower.dtype, device=lower.device)
    if not isinstance(alpha, Tensor):
        raise TypeError(f"{fn}: alpha must be a torch.Tensor or None, got {type(alpha).__name__}")
    if not alpha.is_floating_point():
        raise TypeError(f"{fn}: alpha must have a floating dtype, got {alpha.dtype}")
    try:
        torch.broadcast_shapes(alpha.shape, lower.shape)
    except RuntimeError:
        raise ValueError(
            f"{fn}: alpha of shape {tuple(alpha.shape)} does not broadcast with the bounds' shape "
            f"{tuple(lower.shape)}"
        ) from None
    if values and alpha.numel() and bool(torch.isnan(alpha).any()):
        raise ValueError(f"{fn}: alpha contains NaN; first at index {_first_index(torch.isnan(alpha))}")
    return alpha.to(dtype=lower.dtype, device=lower.device)


def _check_negative_slope(negative_slope: object) -> float:
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, Real):
        raise TypeError(f"relax_leaky_relu: negative_slope must be a real number, got {negative_slope!r}")
    a = float(negative_slope)
    if not (math.isfinite(a) and 0.0 <= a < 1.0):
        raise ValueError(f"relax_leaky_relu: negative_slope must satisfy 0 <= a < 1, got {a}")
    return a


def _result(lw: Tensor, lb: Tensor, uw: Tensor, ub: Tensor) -> Relaxation:
    shape = torch.broadcast_shapes(lw.shape, lb.shape, uw.shape, ub.shape)
    return Relaxation(lw.expand(shape), lb.expand(shape), uw.expand(shape), ub.expand(shape))


def _guard(w: Tensor, b: Tensor, const: Tensor, fallback: float) -> tuple[Tensor, Tensor]:
    """Replace lines with non-finite coefficients by the constant bound ``const`` (or ``fallback``, ±inf,
    where that is not finite either). Both are sound, so the result is NaN-free and sound."""
    ok = torch.isfinite(w) & torch.isfinite(b)
    const = torch.where(torch.isfinite(const), const, torch.full_like(const, fallback))
    return torch.where(ok, w, torch.zeros_like(w)), torch.where(ok, b, const)


# ----------------------------------------------------------------------------------------------------------
# relu and leaky relu


def _relu_chord(l: Tensor, u: Tensor, unstable: Tensor) -> tuple[Tensor, Tensor]:
    """Slope s = u/(u-l) and bias c = -l·s of ReLU's chord where l < 0 < u (garbage elsewhere), with the
    limits s = 1, c = -l for u = +inf; s = 0, c = u for l = -inf; s = 1, c = +inf for both."""
    finite = unstable & torch.isfinite(l) & torch.isfinite(u)
    one = torch.ones_like(l)
    neg_l = torch.where(finite, -l, one)  # > 0 where used
    pos_u = torch.where(finite, u, one)
    den = neg_l + pos_u  # = u - l
    direct = torch.isfinite(den)
    s_direct = pos_u / torch.where(direct, den, one)
    # u - l overflows only when both are huge: divide through by the larger one first
    scale = torch.maximum(torch.where(direct, one, neg_l), torch.where(direct, one, pos_u)).detach()
    a_n = torch.where(direct, one, neg_l) / scale
    b_n = torch.where(direct, one, pos_u) / scale
    s = torch.where(direct, s_direct, b_n / (a_n + b_n))
    c = neg_l * s
    u_inf = u == math.inf
    l_inf = l == -math.inf
    s = torch.where(u_inf, one, torch.where(l_inf, torch.zeros_like(l), s))
    c = torch.where(l_inf, torch.where(u_inf, torch.full_like(l, math.inf), u), torch.where(u_inf, -l, c))
    return s, c


def _two_piece(
    l: Tensor, u: Tensor, a: float, option: str, alpha: Tensor | None, clamp_alpha: bool = True
) -> Relaxation:
    active = l >= 0
    inactive = u <= 0
    unstable = ~(active | inactive)
    one = torch.ones_like(l)
    zero = torch.zeros_like(l)
    s, c = _relu_chord(l, u, unstable)
    chord_w = a + (1.0 - a) * s
    chord_b = (1.0 - a) * c
    stable_w = torch.where(active, one, torch.full_like(l, a))

    if alpha is not None:
        # clamp_alpha=False: the optimiser keeps alpha in [a, 1] itself (projection after each step), so
        # the gradient also flows at the ends of the range, where the clamp's would be zero
        low = torch.clamp(alpha, min=a, max=1.0) if clamp_alpha else alpha + torch.zeros_like(l)
    elif option == "adaptive":
        low = torch.where(chord_w > 0.5, one, torch.full_like(l, a))
    elif option == "same-slope":
        low = chord_w
    elif option == "one-lb":
        low = one
    else:  # zero-lb
        low = torch.full_like(l, a)
    lw = torch.where(unstable, low, stable_w)
    lb = zero

    uw = torch.where(unstable, chord_w, stable_w)
    ub = torch.where(unstable, chord_b, zero)
    if alpha is not None and option == "same-slope":
        # upper line with the optimised slope, through the triangle vertex that keeps it above f
        fin = unstable & torch.isfinite(l) & torch.isfinite(u)
        l_f = torch.where(fin, l, -one)
        u_f = torch.where(fin, u, one)
        through_left = (a - low) * l_f  # line through (l, a·l) with slope `low`
        through_right = (1.0 - low) * u_f  # line through (u, u)
        tied_b = torch.where(low >= chord_w, through_left, through_right)
        uw = torch.where(fin, low, uw)
        ub = torch.where(fin, tied_b, ub)
    return _result(lw, lb, uw, ub)


def relax_relu(
    lower: Tensor,
    upper: Tensor,
    option: str = "adaptive",
    alpha: Tensor | None = None,
    *,
    check: bool = True,
    clamp_alpha: bool = True,
) -> Relaxation:
    """Linear relaxation of ReLU on [lower, upper]; ``option`` in :data:`RELU_OPTIONS`, ``alpha`` the
    α-CROWN lower slope of unstable neurons (clamped to [0, 1]; with ``clamp_alpha=False`` used as is:
    the caller keeps it in [0, 1], and its gradient is 1 on unstable neurons even at 0 and 1).
    'zero-lb' means slope 0 (see module doc)."""
    _check_option(option, "relax_relu")
    _check_bounds(lower, upper, "relax_relu", values=check, allow_inf=True)
    alpha = _prepare_alpha(alpha, lower, "relax_relu", check)
    return _two_piece(lower, upper, 0.0, option, alpha, clamp_alpha)


def relax_leaky_relu(
    lower: Tensor,
    upper: Tensor,
    negative_slope: float,
    option: str = "adaptive",
    alpha: Tensor | None = None,
    *,
    check: bool = True,
    clamp_alpha: bool = True,
) -> Relaxation:
    """Linear relaxation of LeakyReLU(negative_slope = a, 0 <= a < 1): exact where stable (slope 1 or a),
    chord above and s·x below (s in [a, 1], per ``option``, or clamp(alpha, a, 1); alpha as is with
    ``clamp_alpha=False``) where unstable."""
    a = _check_negative_slope(negative_slope)
    _check_option(option, "relax_leaky_relu")
    _check_bounds(lower, upper, "relax_leaky_relu", values=check, allow_inf=True)
    alpha = _prepare_alpha(alpha, lower, "relax_leaky_relu", check)
    return _two_piece(lower, upper, a, option, alpha, clamp_alpha)


# ----------------------------------------------------------------------------------------------------------
# S-shaped: sigmoid, tanh


def _dsigmoid(x: Tensor) -> Tensor:
    return torch.sigmoid(x) * torch.sigmoid(-x)  # accurate in both tails


def _dtanh(x: Tensor) -> Tensor:
    return 4.0 * torch.sigmoid(2.0 * x) * torch.sigmoid(-2.0 * x)  # sech²(x), accurate in both tails


@torch.no_grad()
def _tangent_point(f: Callable, df: Callable, lo: Tensor, u: Tensor, steps: int) -> Tensor:
    """Largest d in [lo, 0] whose tangent is <= f at u, by bisection; needs phi(lo) <= 0 < phi(0) for
    phi(d) = f(d) + f'(d)(u - d) - f(u), which is increasing on d <= 0. Returns the side with phi <= 0."""
    fu = f(u)
    hi = torch.zeros_like(lo)
    for _ in range(steps):
        mid = (lo + hi) / 2
        below = f(mid) + df(mid) * (u - mid) <= fu
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return lo


def _s_shaped_lower(f, df, l, u, fl, k, m, both) -> tuple[Tensor, Tensor]:
    """Lower line of an S-shaped f (convex on x <= 0, concave on x >= 0) on [l, u] where l < 0 < u.

    Chord (slope k) if k < f'(l): g = f - chord has g(l) = g(u) = 0 and g'(l) > 0; g is convex on [l, 0],
    so g' is increasing there and g >= 0 on [l, 0]; g is concave on [0, u] with g(0), g(u) >= 0, so g >= 0.
    Otherwise the tangent t at any d <= 0 with t(u) <= f(u): h = f - t is >= 0 on (-inf, 0] (tangent of a
    convex function) and concave on [0, u] with h(0), h(u) >= 0, so h >= 0 on [l, u]. phi(d) = t_d(u) - f(u)
    has phi'(d) = f''(d)(u - d) >= 0 on d <= 0, phi(l) = (u - l)(f'(l) - k) <= 0 here and phi(0) > 0, so
    bisection on [l, 0] finds the largest such d*, and every d <= d* is valid too: we use min(d*, m).
    """
    direct = k < df(l)
    need = both & ~direct
    lo = torch.where(need, l, -torch.ones_like(l)).detach()
    u_b = torch.where(need, u, torch.ones_like(u)).detach()
    d_star = _tangent_point(f, df, lo, u_b, _BISECTION_STEPS.get(l.dtype, 30))
    d = torch.minimum(d_star, m)
    kd = df(d)
    w = torch.where(direct, k, kd)
    b = torch.where(direct, fl - k * l, f(d) - kd * d)
    return w, b


def _relax_s_shaped(f: Callable, df: Callable, l: Tensor, u: Tensor) -> Relaxation:
    width = u - l
    point = width == 0
    fl, fu = f(l), f(u)
    k = (fu - fl) / torch.where(point, torch.ones_like(width), width)
    chord_b = fl - k * l
    m = (l + u) / 2
    km = df(m)
    tm_b = f(m) - km * m
    neg = u <= 0
    pos = l >= 0
    both = ~(neg | pos)

    lw_both, lb_both = _s_shaped_lower(f, df, l, u, fl, k, m, both)
    # upper line of f on [l, u] = mirror of the lower line of g(x) = -f(-x) (also S-shaped) on [-u, -l]
    uw_both, nub_both = _s_shaped_lower(lambda x: -f(-x), lambda x: df(-x), -u, -l, -fu, k, -m, both)

    lw = torch.where(neg, km, torch.where(pos, k, lw_both))
    lb = torch.where(neg, tm_b, torch.where(pos, chord_b, lb_both))
    uw = torch.where(neg, k, torch.where(pos, km, uw_both))
    ub = torch.where(neg, chord_b, torch.where(pos, tm_b, -nub_both))
    # a point box: the tangent at l on both sides
    kl = df(l)
    tl_b = fl - kl * l
    lw, lb = torch.where(point, kl, lw), torch.where(point, tl_b, lb)
    uw, ub = torch.where(point, kl, uw), torch.where(point, tl_b, ub)
    return _result(lw, lb, uw, ub)


def relax_sigmoid(lower: Tensor, upper: Tensor, *, check: bool = True) -> Relaxation:
    """Linear relaxation of the logistic sigmoid on [lower, upper] (finite bounds)."""
    _check_bounds(lower, upper, "relax_sigmoid", values=check, allow_inf=False)
    return _relax_s_shaped(torch.sigmoid, _dsigmoid, lower, upper)


def relax_tanh(lower: Tensor, upper: Tensor, *, check: bool = True) -> Relaxation:
    """Linear relaxation of tanh on [lower, upper] (finite bounds)."""
    _check_bounds(lower, upper, "relax_tanh", values=check, allow_inf=False)
    return _relax_s_shaped(torch.tanh, _dtanh, lower, upper)


# ----------------------------------------------------------------------------------------------------------
# convex / concave: exp, log, square, reciprocal


def _tangent_fraction(alpha: Tensor | None, like: Tensor) -> Tensor:
    if alpha is None:
        return torch.full_like(like, 0.5)
    return torch.clamp(alpha, min=0.0, max=1.0)


def relax_exp(lower: Tensor, upper: Tensor, alpha: Tensor | None = None, *, check: bool = True) -> Relaxation:
    """Linear relaxation of exp: chord above, tangent at min(l + alpha·(u-l), l + 0.99) below (alpha = 0.5
    by default, clamped to [0, 1]). lower may be -inf and upper +inf; an overflowing e^u gives ub = +inf."""
    _check_bounds(lower, upper, "relax_exp", values=check, allow_inf=True)
    alpha = _prepare_alpha(alpha, lower, "relax_exp", check)
    if check and lower.numel():
        empty = (lower == math.inf) | (upper == -math.inf)
        if bool(empty.any()):
            raise ValueError(f"relax_exp: the box at index {_first_index(empty)} holds no finite point")
    l, u = lower, upper
    one = torch.ones_like(l)
    l_fin, u_fin = torch.isfinite(l), torch.isfinite(u)
    # a finite stand-in box; entries with an infinite bound are overwritten below
    u_s = torch.where(u_fin, u, torch.where(l_fin, l + 1.0, one))
    l_s = torch.where(l_fin, l, u_s - 1.0)
    width = u_s - l_s

    d = torch.minimum(l_s + _tangent_fraction(alpha, l) * width, l_s + _EXP_TANGENT_CAP)
    ed = torch.exp(d)
    lw, lb = ed, ed * (1.0 - d)

    with torch.no_grad():
        overflow = ~torch.isfinite(torch.exp(u_s))
    lc = torch.where(overflow, torch.zeros_like(l), l_s)
    uc = torch.where(overflow, one, u_s)
    wc = uc - lc
    el, eu = torch.exp(lc), torch.exp(uc)
    narrow = wc < 0.5  # e^u - e^l = e^l·expm1(u - l), accurate when u - l is small; 0/0-free at l == u
    w_n = torch.where(narrow, wc, 0.25 * one)
    ratio = torch.where(w_n == 0, one, torch.expm1(w_n) / torch.where(w_n == 0, one, w_n))
    k = torch.where(narrow, el * ratio, (eu - el) / torch.where(narrow, one, wc))
    uw, ub = k, el - k * lc

    inf = torch.full_like(l, math.inf)
    zero = torch.zeros_like(l)
    up_inf = overflow | ~u_fin
    l_minf = l == -math.inf
    uw = torch.where(up_inf | l_minf, zero, uw)
    ub = torch.where(up_inf, inf, torch.where(l_minf, torch.exp(u_s), ub))
    lw = torch.where(l_minf, zero, lw)
    lb = torch.where(l_minf, zero, lb)
    e_lo = torch.exp(l_s)
    lw, lb = _guard(lw, lb, torch.where(l_minf, zero, e_lo), 0.0)
    uw, ub = _guard(uw, ub, torch.where(up_inf, inf, torch.exp(u_s)), math.inf)
    return _result(lw, lb, uw, ub)


def relax_log(lower: Tensor, upper: Tensor, *, check: bool = True) -> Relaxation:
    """Linear relaxation of log on [lower, upper], lower > 0: chord below, tangent at the midpoint above."""
    _check_bounds(lower, upper, "relax_log", values=check, allow_inf=False)
    if check and lower.numel() and bool((lower <= 0).any()):
        i = _first_index(lower <= 0)
        raise ValueError(
            "relax_log needs lower > 0 (log is defined and bounded only on x > 0); "
            f"got lower={float(lower[i])} at index {i}"
        )
    l, u = lower, upper
    one = torch.ones_like(l)
    width = u - l
    point = width == 0
    w_s = torch.where(point, one, width)
    k = torch.where(point, 1.0 / l, torch.log1p(w_s / l) / w_s)  # (log u - log l)/(u - l), accurate
    log_l = torch.log(l)
    lw, lb = k, log_l - k * l
    m = (l + u) / 2
    uw, ub = 1.0 / m, torch.log(m) - 1.0
    lw, lb = _guard(lw, lb, log_l, -math.inf)
    uw, ub = _guard(uw, ub, torch.log(u), math.inf)
    return _result(lw, lb, uw, ub)


def relax_square(
    lower: Tensor, upper: Tensor, alpha: Tensor | None = None, *, check: bool = True
) -> Relaxation:
    """Linear relaxation of x**2 (also pow(x, 2), x*x): chord above (slope l + u, bias -l·u), tangent at
    l + alpha·(u-l) below (alpha = 0.5 by default, clamped to [0, 1])."""
    _check_bounds(lower, upper, "relax_square", values=check, allow_inf=False)
    alpha = _prepare_alpha(alpha, lower, "relax_square", check)
    l, u = lower, upper
    d = l + _tangent_fraction(alpha, l) * (u - l)
    lw, lb = 2.0 * d, -(d * d)
    uw, ub = l + u, -(l * u)
    ll, uu = l * l, u * u
    f_min = torch.where((l <= 0) & (u >= 0), torch.zeros_like(l), torch.minimum(ll, uu))
    lw, lb = _guard(lw, lb, f_min, 0.0)
    uw, ub = _guard(uw, ub, torch.maximum(ll, uu), math.inf)
    return _result(lw, lb, uw, ub)


def relax_reciprocal(lower: Tensor, upper: Tensor, *, check: bool = True) -> Relaxation:
    """Linear relaxation of 1/x on [lower, upper] with 0 outside it (each element either lower > 0 or
    upper < 0): chord and tangent at the midpoint; chord above where x > 0, below where x < 0."""
    _check_bounds(lower, upper, "relax_reciprocal", values=check, allow_inf=False)
    if check and lower.numel():
        straddle = (lower <= 0) & (upper >= 0)
        if bool(straddle.any()):
            i = _first_index(straddle)
            raise ValueError(
                "relax_reciprocal needs 0 outside [lower, upper] (lower > 0 or upper < 0): 1/x is unbounded "
                f"on an interval containing 0; got [{float(lower[i])}, {float(upper[i])}] at index {i}"
            )
    l, u = lower, upper
    inv_l, inv_u = 1.0 / l, 1.0 / u
    chord_w, chord_b = -(inv_l * inv_u), inv_l + inv_u
    inv_m = 2.0 / (l + u)
    tan_w, tan_b = -(inv_m * inv_m), 2.0 * inv_m
    convex = l > 0
    lw, lb = torch.where(convex, tan_w, chord_w), torch.where(convex, tan_b, chord_b)
    uw, ub = torch.where(convex, chord_w, tan_w), torch.where(convex, chord_b, tan_b)
    # 1/x decreases on each side of 0: min 1/u, max 1/l
    lw, lb = _guard(lw, lb, inv_u, -math.inf)
    uw, ub = _guard(uw, ub, inv_l, math.inf)
    return _result(lw, lb, uw, ub)


# ----------------------------------------------------------------------------------------------------------
# dispatch


_RELAXERS: dict[str, Callable[..., Relaxation]] = {
    "relu": relax_relu,
    "leaky_relu": relax_leaky_relu,
    "sigmoid": relax_sigmoid,
    "tanh": relax_tanh,
    "exp": relax_exp,
    "log": relax_log,
    "square": relax_square,
    "reciprocal": relax_reciprocal,
}
RELAXATION_NAMES = tuple(_RELAXERS)
_OPTIONS = {
    name: tuple(p for p in inspect.signature(fn).parameters if p not in ("lower", "upper"))
    for name, fn in _RELAXERS.items()
}


def _relaxer(name: object) -> Callable[..., Relaxation]:
    try:
        return _RELAXERS[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(
            f"no linear relaxation for {name!r}; known functions: {', '.join(RELAXATION_NAMES)}"
        ) from None


def relax(name: str, lower: Tensor, upper: Tensor, **options) -> Relaxation:
    """Relaxation of the function called ``name`` (one of :data:`RELAXATION_NAMES`); ``options`` are the
    keyword arguments of its ``relax_<name>`` (option, alpha, negative_slope, check)."""
    fn = _relaxer(name)
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        raise TypeError(
            f"relax({name!r}): unexpected option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(_OPTIONS[name])}"
        )
    return fn(lower, upper, **options)


def alpha_bounds(name: str, *, negative_slope: float | None = None) -> tuple[float, float] | None:
    """The range alpha is clamped to for ``name``, or None if that relaxation takes no alpha.

    relu: (0, 1) lower slope; leaky_relu: (a, 1) lower slope, (0, 1) when negative_slope is not given
    (values below a are clamped up to a); exp and square: (0, 1), the tangent point's fraction of [l, u].
    """
    _relaxer(name)
    if name == "leaky_relu":
        return (0.0 if negative_slope is None else _check_negative_slope(negative_slope), 1.0)
    if name in ("relu", "exp", "square"):
        return (0.0, 1.0)
    return None
