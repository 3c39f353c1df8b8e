"""Elementwise linear relaxations (lirpa.relaxations): soundness on dense grids, auto_LiRPA's exact
semantics on hand cases, tightness, degenerate and non-finite boxes, gradients and input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from lirpa.relaxations import (
    RELAXATION_NAMES,
    RELU_OPTIONS,
    Relaxation,
    alpha_bounds,
    relax,
    relax_exp,
    relax_leaky_relu,
    relax_log,
    relax_reciprocal,
    relax_relu,
    relax_sigmoid,
    relax_square,
    relax_tanh,
)

INF = math.inf
DTYPES = [torch.float32, torch.float64]
RTOL = {torch.float32: 2e-5, torch.float64: 1e-11}
N_POINTS = 200
HYPOTHESIS = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

FUNCS = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "exp": torch.exp,
    "log": torch.log,
    "square": torch.square,
    "reciprocal": torch.reciprocal,
}


def reference(name: str, negative_slope: float = 0.0):
    if name == "leaky_relu":
        return lambda x: F.leaky_relu(x, negative_slope)
    return FUNCS[name]


def grid(l: Tensor, u: Tensor, n: int = N_POINTS) -> Tensor:
    """n points of [l, u] per element (float64), endpoints included exactly; infinite ends clipped to ±1e3."""
    lo = l.double().clamp(-1e3, 1e3)
    hi = u.double().clamp(-1e3, 1e3)
    lo = torch.minimum(lo, hi)
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    x = lo[..., None] + t * (hi - lo)[..., None]
    x[..., 0] = lo
    x[..., -1] = hi
    return x


def assert_sound(rel: Relaxation, l: Tensor, u: Tensor, f, rtol: float) -> None:
    """lw·x + lb <= f(x) <= uw·x + ub on a dense grid of every box, up to rounding (relative tolerance)."""
    for t in (rel.lw, rel.lb, rel.uw, rel.ub):
        assert not torch.isnan(t).any(), "relaxation contains NaN"
    x = grid(l, u)
    fx = f(x)
    lw, lb, uw, ub = (t.double()[..., None] for t in (rel.lw, rel.lb, rel.uw, rel.ub))
    low = lw * x + lb
    up = uw * x + ub
    tol_low = rtol * (1 + (lw * x).abs() + lb.abs() + fx.abs())
    tol_up = rtol * (1 + (uw * x).abs() + ub.abs().nan_to_num(posinf=0.0) + fx.abs())
    bad_low = ~(low <= fx + tol_low)
    bad_up = ~(fx <= up + tol_up)
    if bad_low.any():
        i = tuple(torch.nonzero(bad_low)[0].tolist())
        raise AssertionError(f"lower line above f at {i}: x={x[i]}, line={low[i]}, f={fx[i]}, box={l, u}")
    if bad_up.any():
        i = tuple(torch.nonzero(bad_up)[0].tolist())
        raise AssertionError(f"upper line below f at {i}: x={x[i]}, line={up[i]}, f={fx[i]}, box={l, u}")


# ----------------------------------------------------------------------------------------------------------
# box generation


def _finite(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _interval(lo: float, hi: float):
    """Random boxes inside [lo, hi]: general, point (l == u), tiny width, and nearly full width."""
    x = _finite(lo, hi)
    general = st.tuples(x, x).map(lambda p: (min(p), max(p)))
    point = x.map(lambda v: (v, v))
    tiny = st.tuples(x, _finite(0.0, 1e-6)).map(lambda p: (p[0], min(p[0] + p[1], hi)))
    wide = st.tuples(_finite(0.0, 0.05), _finite(0.0, 0.05)).map(
        lambda p: (lo + p[0] * (hi - lo), hi - p[1] * (hi - lo))
    )
    return st.one_of(general, general, point, tiny, wide)


@st.composite
def boxes(draw, lo: float = -30.0, hi: float = 30.0, mirror: bool = False):
    """(lower, upper, alpha) lists; mirror: each box is flipped to the negative side with probability 1/2."""
    n = draw(st.integers(1, 16))
    pairs = [draw(_interval(lo, hi)) for _ in range(n)]
    if mirror:
        flips = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        pairs = [(-b, -a) if s else (a, b) for (a, b), s in zip(pairs, flips)]
    alpha = draw(st.lists(_finite(-0.5, 1.5), min_size=n, max_size=n))
    return [p[0] for p in pairs], [p[1] for p in pairs], alpha


def as_tensors(lo, up, alpha, dtype):
    return (
        torch.tensor(lo, dtype=dtype),
        torch.tensor(up, dtype=dtype),
        torch.tensor(alpha, dtype=dtype),
    )


# ----------------------------------------------------------------------------------------------------------
# soundness on dense grids


@pytest.mark.parametrize("option", [*RELU_OPTIONS, "alpha", "same-slope+alpha"])
@given(data=boxes(-20.0, 20.0))
@HYPOTHESIS
def test_relu_sound(option, data):
    for dtype in DTYPES:
        l, u, alpha = as_tensors(*data, dtype)
        if option == "alpha":
            rel = relax_relu(l, u, alpha=alpha)
        elif option == "same-slope+alpha":
            rel = relax_relu(l, u, "same-slope", alpha=alpha)
        else:
            rel = relax_relu(l, u, option)
        assert_sound(rel, l, u, torch.relu, RTOL[dtype])


@pytest.mark.parametrize("option", [*RELU_OPTIONS, "alpha", "same-slope+alpha"])
@given(data=boxes(-20.0, 20.0), slope=st.sampled_from([0.0, 0.01, 0.1, 0.3, 0.5, 0.9]))
@HYPOTHESIS
def test_leaky_relu_sound(option, data, slope):
    for dtype in DTYPES:
        l, u, alpha = as_tensors(*data, dtype)
        if option == "alpha":
            rel = relax_leaky_relu(l, u, slope, alpha=alpha)
        elif option == "same-slope+alpha":
            rel = relax_leaky_relu(l, u, slope, "same-slope", alpha=alpha)
        else:
            rel = relax_leaky_relu(l, u, slope, option)
        assert_sound(rel, l, u, reference("leaky_relu", slope), RTOL[dtype])


CASES = [
    # name, box range, mirror to negative side, uses alpha
    ("sigmoid", (-30.0, 30.0), False, False),
    ("tanh", (-20.0, 20.0), False, False),
    ("exp", (-30.0, 30.0), False, False),
    ("exp", (-30.0, 30.0), False, True),
    ("log", (1e-3, 1e3), False, False),
    ("square", (-100.0, 100.0), False, False),
    ("square", (-100.0, 100.0), False, True),
    ("reciprocal", (1e-2, 100.0), True, False),
]


@pytest.mark.parametrize(("name", "box_range", "mirror", "use_alpha"), CASES)
@given(data=st.data())
@HYPOTHESIS
def test_smooth_functions_sound(name, box_range, mirror, use_alpha, data):
    lo, up, alpha = data.draw(boxes(*box_range, mirror=mirror))
    for dtype in DTYPES:
        l, u, alpha_t = as_tensors(lo, up, alpha, dtype)
        rel = relax(name, l, u, alpha=alpha_t) if use_alpha else relax(name, l, u)
        assert_sound(rel, l, u, reference(name), RTOL[dtype])


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_s_shaped_sound_on_a_dense_family_of_boxes(name):
    """Every box with ends on a grid of [-12, 12] (float64 and float32), so each S-shaped case is covered."""
    ends = torch.linspace(-12.0, 12.0, 49, dtype=torch.float64)
    l, u = torch.meshgrid(ends, ends, indexing="ij")
    keep = l <= u
    l, u = l[keep], u[keep]
    for dtype in DTYPES:
        rel = relax(name, l.to(dtype), u.to(dtype))
        assert_sound(rel, l.to(dtype), u.to(dtype), reference(name), RTOL[dtype])


# ----------------------------------------------------------------------------------------------------------
# exact semantics (auto_LiRPA)


def t(*values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_relu_adaptive_hand_cases():
    rel = relax_relu(t(-1.0, -3.0, 1.0, -2.0, 0.0, -1.0), t(3.0, 1.0, 2.0, -1.0, 0.0, 1.0))
    torch.testing.assert_close(rel.uw, t(0.75, 0.25, 1.0, 0.0, 1.0, 0.5))
    torch.testing.assert_close(rel.ub, t(0.75, 0.75, 0.0, 0.0, 0.0, 0.5))
    # unstable: 1 if the chord slope is > 0.5 (strictly), else 0; stable: exact
    torch.testing.assert_close(rel.lw, t(1.0, 0.0, 1.0, 0.0, 1.0, 0.0))
    torch.testing.assert_close(rel.lb, t(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))


@pytest.mark.parametrize(
    ("option", "expected_lw"),
    [
        ("same-slope", (0.75, 0.25, 1.0, 0.0)),
        ("one-lb", (1.0, 1.0, 1.0, 0.0)),
        ("zero-lb", (0.0, 0.0, 1.0, 0.0)),
    ],
)
def test_relu_options(option, expected_lw):
    rel = relax_relu(t(-1.0, -3.0, 1.0, -2.0), t(3.0, 1.0, 2.0, -1.0), option)
    torch.testing.assert_close(rel.lw, t(*expected_lw))
    torch.testing.assert_close(rel.uw, t(0.75, 0.25, 1.0, 0.0))  # upper line independent of the option


def test_zero_lb_is_slope_zero_even_where_the_chord_rounds_to_one():
    # u/(u-l) rounds to 1.0 in float32 here; auto_LiRPA's quirk (upper_k >= 1.0) would give slope 1
    rel = relax_relu(t(-1e-10, dtype=torch.float32), t(1.0, dtype=torch.float32), "zero-lb")
    assert rel.uw.item() == 1.0 and rel.lw.item() == 0.0


def test_relu_alpha_is_clamped_and_differentiable():
    alpha = t(-0.3, 0.4, 1.7, 0.6, 0.6).requires_grad_()
    rel = relax_relu(t(-1.0, -1.0, -1.0, 1.0, -3.0), t(1.0, 1.0, 1.0, 2.0, -1.0), alpha=alpha)
    torch.testing.assert_close(rel.lw, t(0.0, 0.4, 1.0, 1.0, 0.0))
    (grad,) = torch.autograd.grad(rel.lw.sum(), alpha)
    torch.testing.assert_close(grad, t(0.0, 1.0, 0.0, 0.0, 0.0))  # inside [0, 1] and unstable only


def test_unclamped_alpha_has_gradient_at_the_ends_of_its_range():
    alpha = t(0.0, 1.0, 0.5, 0.0).requires_grad_()
    lo, up = t(-1.0, -1.0, 1.0, -3.0), t(1.0, 2.0, 2.0, -1.0)
    rel = relax_relu(lo, up, alpha=alpha, clamp_alpha=False)
    torch.testing.assert_close(rel.lw, t(0.0, 1.0, 1.0, 0.0))
    (grad,) = torch.autograd.grad(rel.lw.sum(), alpha)
    torch.testing.assert_close(grad, t(1.0, 1.0, 0.0, 0.0))  # unstable only, also at alpha = 0 and 1
    rel = relax_leaky_relu(lo, up, 0.1, alpha=t(0.1, 1.0, 0.5, 0.3), clamp_alpha=False)
    torch.testing.assert_close(rel.lw, t(0.1, 1.0, 1.0, 0.1))
    assert_sound(rel, lo, up, lambda x: torch.nn.functional.leaky_relu(x, 0.1), 1e-12)


def test_alpha_with_a_spec_dimension_broadcasts():
    l, u = t(-1.0, -2.0, 0.5), t(1.0, 1.0, 1.0)
    alpha = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    rel = relax_relu(l, u, alpha=alpha)
    assert all(x.shape == (4, 3) for x in (rel.lw, rel.lb, rel.uw, rel.ub))
    torch.testing.assert_close(rel.lw[:, :2], alpha[:, :2].detach())
    assert_sound(rel, l, u, torch.relu, 1e-12)


def test_relu_same_slope_with_alpha_ties_the_upper_line():
    l, u = t(-1.0, -1.0), t(3.0, 3.0)
    rel = relax_relu(l, u, "same-slope", alpha=t(0.9, 0.5))
    torch.testing.assert_close(rel.uw, t(0.9, 0.5))
    torch.testing.assert_close(rel.ub, t(0.9, 1.5))  # through (l, 0) when slope >= 0.75, else through (u, u)
    assert_sound(rel, l, u, torch.relu, 1e-12)


def test_leaky_relu_hand_cases():
    a = 0.1
    rel = relax_leaky_relu(t(-1.0, -3.0, 1.0, -2.0), t(3.0, 1.0, 2.0, -1.0), a)
    torch.testing.assert_close(rel.uw, t(0.775, 0.325, 1.0, a))
    torch.testing.assert_close(rel.ub, t(0.675, 0.675, 0.0, 0.0))
    torch.testing.assert_close(rel.lw, t(1.0, a, 1.0, a))  # stable negative side keeps slope a (not 0)
    torch.testing.assert_close(rel.lb, t(0.0, 0.0, 0.0, 0.0))
    # the chord passes through (l, a·l) and (u, u)
    torch.testing.assert_close(rel.uw[:1] * -1.0 + rel.ub[:1], t(-0.1))
    torch.testing.assert_close(rel.uw[:1] * 3 + rel.ub[:1], t(3.0))


def test_leaky_relu_adaptive_threshold_is_auto_lirpas_half():
    # chord slope 0.75 > 0.5 -> slope 1 (auto_LiRPA), although 0.75 is equally far from a = 0.5 and 1
    rel = relax_leaky_relu(t(-1.0), t(1.0), 0.5)
    torch.testing.assert_close(rel.uw, t(0.75))
    torch.testing.assert_close(rel.lw, t(1.0))
    assert relax_leaky_relu(t(-1.0), t(1.0), 0.5, "zero-lb").lw.item() == 0.5


def test_leaky_relu_alpha_is_clamped_to_slope_range():
    rel = relax_leaky_relu(t(-1.0, -1.0, -1.0), t(1.0, 1.0, 1.0), 0.2, alpha=t(0.0, 0.5, 2.0))
    torch.testing.assert_close(rel.lw, t(0.2, 0.5, 1.0))


def test_exp_default_tangent_point_is_auto_lirpas():
    l, u = t(-1.0, 0.0, 2.0), t(1.0, 4.0, 2.0)
    d = torch.minimum((l + u) / 2, l + 0.99)  # auto_LiRPA: min(m, l + 0.99)
    rel = relax_exp(l, u)
    torch.testing.assert_close(rel.lw, torch.exp(d))
    torch.testing.assert_close(rel.lb, torch.exp(d) * (1 - d))


def test_alpha_bounds_and_dispatch():
    assert alpha_bounds("relu") == (0.0, 1.0)
    assert alpha_bounds("leaky_relu", negative_slope=0.1) == (0.1, 1.0)
    assert alpha_bounds("leaky_relu") == (0.0, 1.0)
    assert alpha_bounds("exp") == alpha_bounds("square") == (0.0, 1.0)
    for name in ("sigmoid", "tanh", "log", "reciprocal"):
        assert alpha_bounds(name) is None
    assert set(RELAXATION_NAMES) == {
        "relu",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "exp",
        "log",
        "square",
        "reciprocal",
    }
    l, u = t(0.5, 1.0), t(2.0, 3.0)
    direct = {
        "relu": relax_relu(l, u),
        "leaky_relu": relax_leaky_relu(l, u, 0.1),
        "sigmoid": relax_sigmoid(l, u),
        "tanh": relax_tanh(l, u),
        "exp": relax_exp(l, u),
        "log": relax_log(l, u),
        "square": relax_square(l, u),
        "reciprocal": relax_reciprocal(l, u),
    }
    for name, expected in direct.items():
        options = {"negative_slope": 0.1} if name == "leaky_relu" else {}
        got = relax(name, l, u, **options)
        for a, b in zip(
            (got.lw, got.lb, got.uw, got.ub), (expected.lw, expected.lb, expected.uw, expected.ub)
        ):
            torch.testing.assert_close(a, b)


def test_check_false_gives_the_same_relaxation():
    l, u = t(-1.0, 0.3, -4.0), t(2.0, 0.9, -1.0)
    for name in ("relu", "sigmoid", "tanh", "exp", "square"):
        a, b = relax(name, l, u), relax(name, l, u, check=False)
        assert all(torch.equal(x, y) for x, y in zip((a.lw, a.lb, a.uw, a.ub), (b.lw, b.lb, b.uw, b.ub)))


# ----------------------------------------------------------------------------------------------------------
# tightness


def touches(w, b, x, fx, tol=1e-9):
    return torch.allclose(w * x + b, fx, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    ("name", "side", "l", "u"),
    [
        ("relu", "upper", -2.0, 3.0),
        ("sigmoid", "upper", -4.0, -0.5),
        ("sigmoid", "lower", 0.5, 4.0),
        ("tanh", "upper", -3.0, -0.1),
        ("tanh", "lower", 0.2, 2.0),
        ("exp", "upper", -2.0, 3.0),
        ("log", "lower", 0.1, 5.0),
        ("square", "upper", -1.5, 3.0),
        ("reciprocal", "upper", 0.5, 4.0),
        ("reciprocal", "lower", -4.0, -0.5),
    ],
)
def test_chords_touch_f_at_both_ends(name, side, l, u):
    rel = relax(name, t(l), t(u))
    w, b = (rel.uw, rel.ub) if side == "upper" else (rel.lw, rel.lb)
    f = reference(name)
    for x in (t(l), t(u)):
        assert touches(w, b, x, f(x))


@pytest.mark.parametrize(
    ("name", "side", "l", "u", "alpha"),
    [
        ("exp", "lower", -2.0, 3.0, 0.3),
        ("exp", "lower", -2.0, -1.5, None),
        ("square", "lower", -1.5, 3.0, 0.8),
        ("square", "lower", 1.0, 2.0, None),
        ("log", "upper", 0.1, 5.0, None),
        ("sigmoid", "lower", -4.0, -0.5, None),
        ("tanh", "upper", 0.2, 2.0, None),
        ("reciprocal", "lower", 0.5, 4.0, None),
    ],
)
def test_tangents_touch_f_at_their_point(name, side, l, u, alpha):
    options = {} if alpha is None else {"alpha": t(alpha)}
    rel = relax(name, t(l), t(u), **options)
    w, b = (rel.uw, rel.ub) if side == "upper" else (rel.lw, rel.lb)
    d = t(l + (0.5 if alpha is None else alpha) * (u - l))
    if name == "exp":
        d = torch.minimum(d, t(l + 0.99))
    x = d.clone().requires_grad_()
    fx = reference(name)(x)
    (slope,) = torch.autograd.grad(fx, x)
    assert touches(w, b, d, fx.detach())
    torch.testing.assert_close(w, slope)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_s_shaped_straddling_tangent_passes_through_the_far_end(name):
    """l < 0 < u with no valid chord: the lower tangent's point d* is pushed until the line meets f at u
    (or stops at the midpoint), and no valid tangent point beyond it exists."""
    f = reference(name)
    l, u = t(-6.0, -3.0, -2.0), t(0.5, 1.0, 4.0)
    rel = relax(name, l, u)
    line_u = rel.lw * u + rel.lb
    m = (l + u) / 2
    m_ = m.clone().requires_grad_()
    (dm,) = torch.autograd.grad(f(m_).sum(), m_)
    at_m = torch.isclose(rel.lw, dm, rtol=1e-12, atol=1e-14)
    assert (torch.isclose(line_u, f(u), rtol=1e-9, atol=1e-12) | at_m).all()
    assert not at_m.all(), "the cases should include a tangent through (u, f(u))"
    assert_sound(rel, l, u, f, 1e-12)


def test_square_on_one_two_contains_the_true_range_exactly_at_the_ends():
    """auto_LiRPA under torch 2.13 gave [0.75, 3.75] for x**2 on [1, 2]; the true range is [1, 4]."""
    for dtype in DTYPES:
        l, u = t(1.0, dtype=dtype), t(2.0, dtype=dtype)
        rel = relax_square(l, u)
        assert (rel.uw * l + rel.ub).item() == 1.0
        assert (rel.uw * u + rel.ub).item() == 4.0
        upper = torch.maximum(rel.uw * l, rel.uw * u) + rel.ub  # concretised over [1, 2]
        lower = torch.minimum(rel.lw * l, rel.lw * u) + rel.lb
        assert upper.item() == 4.0 and lower.item() <= 1.0
        assert_sound(rel, l, u, torch.square, 0.0)  # exact arithmetic here: no tolerance needed


# ----------------------------------------------------------------------------------------------------------
# degenerate and non-finite boxes


POINT_BOXES = {
    "relu": (-2.0, 0.0, 3.5),
    "leaky_relu": (-2.0, 0.0, 3.5),
    "sigmoid": (-40.0, -1.0, 0.0, 2.5, 40.0),
    "tanh": (-30.0, -1.0, 0.0, 2.5, 30.0),
    "exp": (-80.0, -1.0, 0.0, 20.0),
    "log": (1e-6, 0.5, 1.0, 1e4),
    "square": (-3.0, 0.0, 1e-3, 7.0),
    "reciprocal": (-5.0, -1e-3, 1e-3, 2.0),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", RELAXATION_NAMES)
def test_point_boxes_are_exact_and_nan_free(name, dtype):
    x = torch.tensor(POINT_BOXES[name], dtype=dtype, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    options = {"negative_slope": 0.1} if name == "leaky_relu" else {}
    rel = relax(name, x, y, **options)
    fx = reference(name, 0.1)(x.detach().double())
    for w, b in ((rel.lw, rel.lb), (rel.uw, rel.ub)):
        assert torch.isfinite(w).all() and torch.isfinite(b).all()
        torch.testing.assert_close(w.double() * x.detach().double() + b.double(), fx, rtol=1e-5, atol=1e-6)
    total = sum(v.sum() for v in (rel.lw, rel.lb, rel.uw, rel.ub))
    grads = torch.autograd.grad(total, (x, y), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


INF_BOXES = [
    (-INF, 2.0),
    (-1.0, INF),
    (-INF, INF),
    (-INF, -1.0),
    (1.0, INF),
    (0.0, INF),
    (-INF, 0.0),
    (-INF, -INF),
    (INF, INF),
    (-3.0, 5.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.0, 0.2])
@pytest.mark.parametrize("option", [*RELU_OPTIONS, "alpha"])
def test_relu_and_leaky_relu_with_infinite_bounds(dtype, slope, option):
    l = torch.tensor([b[0] for b in INF_BOXES], dtype=dtype, requires_grad=True)
    u = torch.tensor([b[1] for b in INF_BOXES], dtype=dtype, requires_grad=True)
    alpha = torch.full_like(l, 0.7) if option == "alpha" else None
    rel = relax_leaky_relu(l, u, slope, "adaptive" if alpha is not None else option, alpha=alpha)
    for v in (rel.lw, rel.lb, rel.uw, rel.ub):
        assert not torch.isnan(v).any()
    assert torch.isfinite(rel.lw).all() and torch.isfinite(rel.lb).all() and torch.isfinite(rel.uw).all()
    assert rel.ub[2].item() == INF  # (-inf, inf): no finite line lies above relu
    assert torch.isfinite(rel.ub[[0, 1, 3, 4, 5, 6, 9]]).all()
    torch.testing.assert_close(rel.uw[0].double(), torch.tensor(slope, dtype=torch.float64))  # l=-inf: flat
    torch.testing.assert_close(rel.ub[1].double(), torch.tensor(1.0 - slope, dtype=torch.float64))  # -l·(1-a)
    assert_sound(rel, l.detach(), u.detach(), reference("leaky_relu", slope), RTOL[dtype])
    finite = [torch.where(torch.isfinite(v), v, 0.0).sum() for v in (rel.lw, rel.lb, rel.uw, rel.ub)]
    grads = torch.autograd.grad(sum(finite), (l, u))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_with_infinite_and_overflowing_bounds(dtype):
    big = 100.0 if dtype == torch.float32 else 800.0
    edge = 88.0 if dtype == torch.float32 else 709.0
    boxes_ = [
        (-INF, 1.0),
        (0.0, INF),
        (-INF, INF),
        (50.0, 2 * big),
        (edge - 8, edge),
        (-2 * big, -big),
        (big, big),
        (-1.0, 1.0),
    ]
    l = torch.tensor([b[0] for b in boxes_], dtype=dtype, requires_grad=True)
    u = torch.tensor([b[1] for b in boxes_], dtype=dtype, requires_grad=True)
    rel = relax_exp(l, u)
    for v in (rel.lw, rel.lb, rel.uw, rel.ub):
        assert not torch.isnan(v).any()
    assert torch.isfinite(rel.lw).all() and torch.isfinite(rel.lb).all() and torch.isfinite(rel.uw).all()
    torch.testing.assert_close(rel.ub[0], torch.exp(u[0].detach()))  # l = -inf: the chord's limit e^u
    assert rel.ub[1].item() == INF and rel.ub[3].item() == INF and rel.ub[6].item() == INF
    assert rel.lw[0].item() == 0.0 and rel.lb[0].item() == 0.0
    # soundness where the grid stays representable
    keep = torch.tensor([0, 1, 2, 4, 5, 7])
    sub = Relaxation(*(v[keep] for v in (rel.lw, rel.lb, rel.uw, rel.ub)))
    assert_sound(
        sub, l.detach()[keep].clamp(min=-1e2), u.detach()[keep].clamp(max=edge), torch.exp, RTOL[dtype]
    )
    finite = [torch.where(torch.isfinite(v), v, 0.0).sum() for v in (rel.lw, rel.lb, rel.uw, rel.ub)]
    grads = torch.autograd.grad(sum(finite), (l, u))
    assert all(torch.isfinite(g[[0, 1, 2, 7]]).all() for g in grads)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "log", "square", "reciprocal"])
def test_other_functions_reject_infinite_bounds(name):
    with pytest.raises(ValueError, match="finite bounds"):
        relax(name, t(1.0, 2.0), t(3.0, INF))


def test_overflowing_lines_fall_back_to_constant_bounds():
    l, u = t(1e-30, 3e19, dtype=torch.float32), t(1.0, 4e19, dtype=torch.float32)
    rec = relax_reciprocal(l[:1], u[:1])  # chord slope -1/(l·u) = -1e30 stays finite in float32
    assert not torch.isnan(rec.ub).any()
    sq = relax_square(l[1:], u[1:])  # -l·u overflows float32: upper line becomes (0, +inf)
    assert sq.uw.item() == 0.0 and sq.ub.item() == INF
    assert torch.isfinite(sq.lw).all() and not torch.isnan(sq.lb).any()


# ----------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("name", RELAXATION_NAMES)
def test_gradients_are_finite(name):
    if name in ("log", "reciprocal"):
        l0, u0 = t(0.1, 0.5, 2.0, 3.0), t(0.1, 0.9, 5.0, 3.0 + 1e-9)
    else:
        l0, u0 = t(-3.0, -0.5, 0.2, 1.0, -2.0, -1e-9), t(2.0, -0.1, 0.2, 4.0, 2.5, 1e-9)
    l, u = l0.clone().requires_grad_(), u0.clone().requires_grad_()
    options = {"negative_slope": 0.1} if name == "leaky_relu" else {}
    if alpha_bounds(name) is not None:
        options["alpha"] = torch.full_like(l0, 0.3).requires_grad_()
    rel = relax(name, l, u, **options)
    total = sum(v.sum() for v in (rel.lw, rel.lb, rel.uw, rel.ub))
    inputs = (l, u, options["alpha"]) if "alpha" in options else (l, u)
    grads = torch.autograd.grad(total, inputs, allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    ("name", "l", "u"),
    [
        ("relu", (-1.0, -3.0, 0.5), (2.0, 1.0, 2.0)),
        ("leaky_relu", (-1.0, -3.0, 0.5), (2.0, 1.0, 2.0)),
        ("sigmoid", (-3.0, 0.5), (-1.0, 2.0)),  # convex / concave parts (the straddling tangent has no grad)
        ("tanh", (-3.0, 0.5), (-1.0, 2.0)),
        ("exp", (-1.0, 0.0), (2.0, 0.3)),
        ("log", (0.5, 1.0), (2.0, 1.5)),
        ("square", (-1.0, 0.5), (2.0, 3.0)),
        ("reciprocal", (0.5, -3.0), (2.0, -1.0)),
    ],
)
def test_gradcheck_with_respect_to_the_bounds(name, l, u):
    options = {"negative_slope": 0.1} if name == "leaky_relu" else {}

    def coefficients(lower, upper):
        rel = relax(name, lower, upper, **options)
        return rel.lw, rel.lb, rel.uw, rel.ub

    inputs = (t(*l).requires_grad_(), t(*u).requires_grad_())
    assert torch.autograd.gradcheck(coefficients, inputs)


# ----------------------------------------------------------------------------------------------------------
# bad input


def test_bad_inputs_raise_clear_errors():
    l, u = t(-1.0, 0.0, 1.0), t(1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="same shape"):
        relax_relu(l, t(1.0, 2.0))
    with pytest.raises(TypeError, match="floating dtype"):
        relax_relu(torch.tensor([0, 1]), torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        relax_relu([0.0], [1.0])
    with pytest.raises(TypeError, match="same dtype"):
        relax_relu(l, u.float())
    with pytest.raises(ValueError, match=r"index \(1,\).*lower=0.5 > upper=0.25"):
        relax_tanh(t(0.0, 0.5, 0.0), t(1.0, 0.25, -1.0))
    with pytest.raises(ValueError, match="NaN"):
        relax_sigmoid(t(0.0, math.nan), t(1.0, 1.0))
    with pytest.raises(ValueError, match="adaptive, same-slope, zero-lb, one-lb"):
        relax_relu(l, u, "triangle")
    with pytest.raises(ValueError, match="relu, leaky_relu, sigmoid"):
        relax("gelu", l, u)
    with pytest.raises(ValueError, match="known functions"):
        alpha_bounds("softplus")
    with pytest.raises(TypeError, match="unexpected option"):
        relax("sigmoid", l, u, alpha=t(0.5))
    with pytest.raises(ValueError, match=r"lower > 0.*index \(0,\)"):
        relax_log(t(0.0, 1.0), t(1.0, 2.0))
    with pytest.raises(ValueError, match="unbounded on an interval containing 0"):
        relax_reciprocal(t(1.0, -1.0), t(2.0, 1.0))
    with pytest.raises(ValueError, match="unbounded"):
        relax_reciprocal(t(0.0), t(2.0))
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="0 <= a < 1"):
            relax_leaky_relu(l, u, bad)
    with pytest.raises(TypeError, match="negative_slope"):
        relax_leaky_relu(l, u, "0.1")
    with pytest.raises(ValueError, match="does not broadcast"):
        relax_relu(l, u, alpha=t(0.1, 0.2))
    with pytest.raises(ValueError, match="alpha contains NaN"):
        relax_square(l, u, alpha=t(0.1, math.nan, 0.2))
    with pytest.raises(ValueError, match="no finite point"):
        relax_exp(t(INF), t(INF))


def test_inputs_are_not_modified():
    l, u = t(-1.0, 0.5, -3.0), t(2.0, 1.0, -1.0)
    l0, u0 = l.clone(), u.clone()
    for name in RELAXATION_NAMES:
        if name in ("log", "reciprocal"):
            continue
        relax(name, l, u, **({"negative_slope": 0.1} if name == "leaky_relu" else {}))
    assert torch.equal(l, l0) and torch.equal(u, u0)
