"""certcore.ops.bound_inf_dist: soundness, exactness at corners, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch

from certcore.bounds import Interval
from certcore.ops import bound_inf_dist, norm_dist, reference
from certcore.testing import check_bounds_sound

SHAPES = {"fc": (6, 24, None, 12), "conv": (3, 20, 9, 12)}


def _box(shape: str, groups: int, dtype: torch.dtype, seed: int = 0, width: float = 0.5):
    B, CI, HW, CO = SHAPES[shape]
    gen = torch.Generator().manual_seed(seed)
    xs = (B, CI) if HW is None else (B, CI, HW)
    centre = torch.randn(xs, generator=gen, dtype=dtype)
    radius = torch.rand(xs, generator=gen, dtype=dtype) * width
    w = torch.randn(CO, CI // groups, generator=gen, dtype=dtype)
    return centre - radius, centre + radius, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_matches_reference_bitwise(groups: int, shape: str, dtype: torch.dtype) -> None:
    lower, upper, w = _box(shape, groups, dtype)
    got = bound_inf_dist(lower, upper, w, groups=groups)
    want = reference.bound_inf_dist(lower, upper, w, groups=groups)
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.equal(a, b)
    # and the raw op's argmax positions too
    lo3 = lower if lower.dim() == 3 else lower.unsqueeze(-1)
    up3 = upper if upper.dim() == 3 else upper.unsqueeze(-1)
    raw = torch.ops.certcore.bound_inf_dist_forward(lo3, up3, w, groups)
    ref = reference.bound_inf_dist_forward(lo3, up3, w, groups)
    for a, b in zip(raw, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("groups", [1, 2])
def test_bounds_contain_sampled_points(groups: int, shape: str) -> None:
    """The soundness kit: centre, uniform samples, corners and PGD points stay inside the bounds."""
    lower, upper, w = _box(shape, groups, torch.float64, seed=1)
    x = (lower + upper) / 2
    eps = 0.3

    def fn(z: torch.Tensor) -> torch.Tensor:
        return norm_dist(z, w, math.inf, groups=groups)

    def bound_fn(box: Interval):
        return bound_inf_dist(box.lower, box.upper, w, groups=groups)

    # default float64 tolerance (1e-9): the kit builds its corner points with rounding of its own;
    # exactness at the true corners is test_bounds_are_reached_exactly_at_corners
    check_bounds_sound(fn, x, eps, bound_fn, n_samples=32, pgd_steps=10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups", [1, 2])
def test_bounds_are_reached_exactly_at_corners(groups: int, dtype: torch.dtype) -> None:
    """y_upper is norm_dist at the far corner, y_lower at the projection of w onto the box."""
    lower, upper, w = _box("fc", groups, dtype, seed=2, width=2.0)
    B, CI = lower.shape
    CO, K = w.shape
    N = CO // groups
    lower[0, :K], upper[0, :K] = w[0] - 1, w[0] + 1  # a box around w[0]: y_lower[0, 0] clamps at 0
    y_lo, y_up = bound_inf_dist(lower, upper, w, groups=groups)
    for o in range(CO):
        g = o // N
        sl = slice(g * K, (g + 1) * K)
        lo, up, wo = lower[:, sl], upper[:, sl], w[o]
        far = torch.where(up - wo >= wo - lo, up, lo)  # maximises every |x_i - w_i|
        near = torch.minimum(torch.maximum(wo.expand_as(lo), lo), up)  # minimises every |x_i - w_i|
        x_far = lower.clone()
        x_far[:, sl] = far
        x_near = lower.clone()
        x_near[:, sl] = near
        assert torch.equal(norm_dist(x_far, w, math.inf, groups=groups)[:, o], y_up[:, o])
        assert torch.equal(norm_dist(x_near, w, math.inf, groups=groups)[:, o], y_lo[:, o])
    # the box is wide enough that some lower bounds are clamped at 0 and some are positive
    assert (y_lo == 0).any() and (y_lo > 0).any()


def test_point_interval_gives_the_point_value() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 10, 5, generator=gen)
    w = torch.randn(6, 10, generator=gen)
    y_lo, y_up = bound_inf_dist(x, x, w)
    y = norm_dist(x, w, math.inf)
    assert torch.equal(y_lo, y) and torch.equal(y_up, y)


def test_infinite_bounds_are_allowed() -> None:
    lower = torch.tensor([[-math.inf, 0.0]])
    upper = torch.tensor([[math.inf, 1.0]])
    w = torch.tensor([[0.0, 5.0]])
    y_lo, y_up = bound_inf_dist(lower, upper, w)
    assert y_up.item() == math.inf and y_lo.item() == 4.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("groups", [1, 2])
def test_gradients_match_reference(groups: int, shape: str, dtype: torch.dtype) -> None:
    lower, upper, w = _box(shape, groups, dtype, seed=4, width=1.5)
    leaves = [t.clone().requires_grad_(True) for t in (lower, upper, w)]
    gen = torch.Generator().manual_seed(5)
    y_lo, y_up = bound_inf_dist(*leaves, groups=groups)
    g_lo = torch.randn(y_lo.shape, generator=gen, dtype=dtype)
    g_up = torch.randn(y_up.shape, generator=gen, dtype=dtype)
    got = torch.autograd.grad((y_lo, y_up), leaves, (g_lo, g_up))
    r_lo, r_up = reference.bound_inf_dist(*leaves, groups=groups)
    want = torch.autograd.grad((r_lo, r_up), leaves, (g_lo, g_up))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_gradcheck_float64(shape: str) -> None:
    lower, upper, w = _box(shape, 2, torch.float64, seed=6, width=1.5)
    leaves = tuple(
        t[:3].clone().requires_grad_(True) if t is not w else t.clone().requires_grad_(True)
        for t in (lower, upper, w)
    )
    assert torch.autograd.gradcheck(
        lambda lo, up, ww: bound_inf_dist(lo, up, ww, groups=2), leaves, eps=1e-6, atol=1e-5
    )


def test_gradient_rules_on_a_small_example() -> None:
    """y_upper from u - w (arg i) and from w - l (arg ~i); y_lower clamped at 0 gets no gradient."""
    lower = torch.tensor([[0.0, -3.0], [2.0, 4.0]], requires_grad=True)
    upper = torch.tensor([[1.0, -2.0], [3.0, 5.0]], requires_grad=True)
    w = torch.tensor([[0.5, 0.0]], requires_grad=True)
    y_lo, y_up = bound_inf_dist(lower, upper, w)
    # row 0: t1 = u - w = [0.5, -2], t2 = w - l = [0.5, 3] -> y_up = 3 from w_1 - l_1 (arg ~1);
    #        lower: max(l - w, w - u) = [max(-0.5, -0.5), max(-3, 2)] = 2 from w_1 - u_1 (arg ~1)
    # row 1: t1 = [2.5, 5], t2 = [-1.5, -4] -> y_up = 5 from u_1 - w_1 (arg 1);
    #        lower: max(l - w, w - u) = [1.5, 4] -> 4 from l_1 - w_1 (arg 1)
    assert y_up.flatten().tolist() == [3.0, 5.0] and y_lo.flatten().tolist() == [2.0, 4.0]
    (y_up.sum() + 10 * y_lo.sum()).backward()
    assert lower.grad.tolist() == [[0.0, -1.0], [0.0, 10.0]]
    assert upper.grad.tolist() == [[0.0, -10.0], [0.0, 1.0]]
    assert w.grad.tolist() == [[0.0, 1.0 + 10.0 - 1.0 - 10.0]]


def test_clamped_lower_bound_has_no_gradient() -> None:
    lower = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    upper = torch.tensor([[1.0, 1.0]], requires_grad=True)
    w = torch.tensor([[0.0, 0.5]], requires_grad=True)
    y_lo, _ = bound_inf_dist(lower, upper, w)
    assert y_lo.item() == 0.0
    y_lo.sum().backward()
    for t in (lower, upper, w):
        assert torch.equal(t.grad, torch.zeros_like(t))
    lo3, up3 = lower.detach().unsqueeze(-1), upper.detach().unsqueeze(-1)
    _, _, arg_lo, _ = torch.ops.certcore.bound_inf_dist_forward(lo3, up3, w.detach(), 1)
    assert arg_lo.item() == -(2**31)


def test_ties_go_to_the_first_index_and_prefer_the_upper_end() -> None:
    # |interval - w| reaches 2 at both coordinates, from both ends at coordinate 0
    lower = torch.tensor([[-2.0, -1.0]])
    upper = torch.tensor([[2.0, 1.0]])
    w = torch.tensor([[0.0, -1.0]])
    _, _, _, arg_up = torch.ops.certcore.bound_inf_dist_forward(
        lower.unsqueeze(-1), upper.unsqueeze(-1), w, 1
    )
    assert arg_up.item() == 0  # index 0, from u_0 - w_0 (preferred over w_0 - l_0 on a tie)


# --- bad input -------------------------------------------------------------------------------


def test_lower_above_upper_is_an_error_not_a_silent_fix() -> None:
    lower = torch.zeros(2, 4)
    upper = torch.ones(2, 4)
    upper[1, 2] = -0.5
    with pytest.raises(ValueError, match=r"lower must be <= upper elementwise .*1 of 8 entries"):
        bound_inf_dist(lower, upper, torch.randn(3, 4))


def test_nan_bounds_or_weights_are_errors() -> None:
    lower, upper = torch.zeros(2, 4), torch.ones(2, 4)
    bad = upper.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="lower must be <= upper"):
        bound_inf_dist(lower, bad, torch.randn(3, 4))
    w = torch.randn(3, 4)
    w[1, 1] = math.inf
    with pytest.raises(ValueError, match="w must be finite"):
        bound_inf_dist(lower, upper, w)


@pytest.mark.parametrize(
    ("lower", "upper", "w", "groups", "exc", "match"),
    [
        (
            torch.zeros(2, 4),
            torch.ones(2, 5),
            torch.randn(3, 4),
            1,
            ValueError,
            "upper must have the shape of lower",
        ),
        (
            torch.zeros(2, 4),
            torch.ones(2, 4),
            torch.randn(3, 3),
            1,
            ValueError,
            r"w.shape\[1\] must be CI/groups",
        ),
        (torch.zeros(2, 4), torch.ones(2, 4), torch.randn(3, 2), 2, ValueError, "CO = 3 output channels"),
        (
            torch.zeros(2, 4),
            torch.ones(2, 4).double(),
            torch.randn(3, 4),
            1,
            TypeError,
            "upper must have the dtype",
        ),
        (
            torch.zeros(2, 4),
            torch.ones(2, 4),
            torch.randn(3, 4).double(),
            1,
            TypeError,
            "w must have the dtype",
        ),
        (
            torch.zeros(2, 4, 1, 1),
            torch.ones(2, 4, 1, 1),
            torch.randn(3, 4),
            1,
            ValueError,
            "lower must be 2-D",
        ),
    ],
)
def test_bad_input_is_a_clear_error(lower, upper, w, groups, exc, match) -> None:
    with pytest.raises(exc, match=match):
        bound_inf_dist(lower, upper, w, groups=groups)


@pytest.mark.parametrize("which", ["lower", "upper"])
def test_raw_backward_rejects_codes_outside_the_input(which: str) -> None:
    """torch.ops.certcore called directly with a corrupt argmax code: an error, never a stray write."""
    import certcore

    if certcore.backend("cpu")["bound_inf_dist"] != "cpu kernel":
        pytest.skip("the C++ kernel's own check")
    lower = torch.randn(2, 6, 3)
    yl, yu, al, au = torch.ops.certcore.bound_inf_dist_forward(lower, lower + 1, torch.randn(4, 6), 1)
    codes = {"lower": al, "upper": au}
    codes[which] = torch.full_like(codes[which], ~6)  # "~i" with i = 6 = CI: one past the last input
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.certcore.bound_inf_dist_backward(
            torch.ones_like(yl),
            torch.ones_like(yu),
            codes["lower"],
            codes["upper"],
            torch.randn(4, 6),
            6,
            1,
            [True, True, True],
        )
