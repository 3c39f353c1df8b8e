"""certcore.ops.norm_dist: values and gradients vs the reference, gradcheck, ties, x == w, errors.

Runs on whatever backend serves the CPU (the C++ kernel when certcore._C is built, else the
reference); the CPU kernel's three instruction-set paths are each exercised through
CERTCORE_CPU_ISA (read on every call). CUDA is covered in test_ops_cuda.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import certcore
from certcore.ops import norm_dist, reference

P_VALUES = [1.0, 2.0, 2.5, 8.0, 1000.0, math.inf]
ISAS = ["avx512", "avx2", "generic"]
# (B, CI, HW, CO): fully connected (HW = 1, and the 2-D form) and conv (unfolded patches, HW > 1)
SHAPES = {"fc": (6, 24, None, 12), "fc3d": (5, 36, 1, 24), "conv": (3, 20, 9, 12)}


def _inputs(shape: str, groups: int, dtype: torch.dtype, seed: int = 0):
    B, CI, HW, CO = SHAPES[shape]
    gen = torch.Generator().manual_seed(seed)
    xs = (B, CI) if HW is None else (B, CI, HW)
    x = torch.randn(xs, generator=gen, dtype=dtype)
    w = torch.randn(CO, CI // groups, generator=gen, dtype=dtype)
    return x, w


def _tol(dtype: torch.dtype, p: float) -> dict:
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 2e-5, "atol": 1e-6}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("p", P_VALUES)
def test_forward_matches_reference(p: float, groups: int, shape: str, dtype: torch.dtype) -> None:
    x, w = _inputs(shape, groups, dtype)
    y = norm_dist(x, w, p, groups=groups)
    expected = reference.norm_dist(x, w, p, groups=groups)
    assert y.shape == expected.shape and y.dtype == dtype
    if math.isinf(p):
        assert torch.equal(y, expected)  # a max of exact differences: bitwise
    else:
        torch.testing.assert_close(y, expected, **_tol(dtype, p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", ["fc", "conv"])
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("p", P_VALUES)
def test_gradients_match_reference(p: float, groups: int, shape: str, dtype: torch.dtype) -> None:
    x, w = _inputs(shape, groups, dtype, seed=1)
    x.requires_grad_(True)
    w.requires_grad_(True)
    gen = torch.Generator().manual_seed(2)
    y = norm_dist(x, w, p, groups=groups)
    g = torch.randn(y.shape, generator=gen, dtype=dtype)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    y_ref = reference.norm_dist(x, w, p, groups=groups)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), g)
    if math.isinf(p):
        torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)
        torch.testing.assert_close(gw, gw_ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
        return
    # (|t|/y)^(p-1) amplifies the rounding of |t|/y by p - 1: at p = 1000 in float32 a relative
    # error of 1e-7 becomes 1e-4 in a term.
    if dtype == torch.float64:
        tol = {"rtol": 1e-8, "atol": 1e-10}
    else:
        tol = {"rtol": 2e-3, "atol": 2e-4} if p > 100 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(gx, gx_ref, **tol)
    torch.testing.assert_close(gw, gw_ref, **tol)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [1.0, 3.0, 7.5, 8.0, math.inf])
def test_every_instruction_set_path(monkeypatch, isa: str, dtype: torch.dtype, p: float) -> None:
    """Each SIMD build of the CPU kernel (the CPU falls back to a narrower one if it lacks one)."""
    monkeypatch.setenv("CERTCORE_CPU_ISA", isa)
    gen = torch.Generator().manual_seed(3)
    # K = 37 is not a multiple of any vector width; 5 rows and 7 columns are not multiples of the
    # register blocks; HW = 3 exercises the transposed packing.
    x = torch.randn(5, 74, 3, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(14, 37, generator=gen, dtype=dtype, requires_grad=True)
    y = norm_dist(x, w, p, groups=2)
    y_ref = reference.norm_dist(x, w, p, groups=2)
    torch.testing.assert_close(y, y_ref, **_tol(dtype, p))
    g = torch.randn(y.shape, generator=gen, dtype=dtype)
    got = torch.autograd.grad(y, (x, w), g)
    want = torch.autograd.grad(y_ref, (x, w), g)
    tol = {"rtol": 1e-8, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("p", [0.7, 1.0, 2.0, 2.5, 3.0, 8.0, 13.0, math.inf])
@pytest.mark.parametrize("shape", ["fc", "conv"])
def test_gradcheck_float64(p: float, shape: str) -> None:
    """Finite differences in float64; random data keeps ties and zero differences away."""
    x, w = _inputs(shape, 2, torch.float64, seed=4)
    x = x[:3].clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: norm_dist(a, b, p, groups=2), (x, w), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("p", [3.0, 2.5])
def test_gradients_of_a_larger_layer_on_several_threads(p: float, threads: int) -> None:
    """Big enough for the fused backward's blocks (rows and columns split per thread, run in phases)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(9)
        x = torch.randn(20, 100, 3, generator=gen, dtype=torch.float64, requires_grad=True)
        w = torch.randn(60, 50, generator=gen, dtype=torch.float64, requires_grad=True)
        y = norm_dist(x, w, p, groups=2)
        g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        got = torch.autograd.grad(y, (x, w), g)
        want = torch.autograd.grad(reference.norm_dist(x, w, p, groups=2), (x, w), g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    finally:
        torch.set_num_threads(old)


def test_non_contiguous_inputs() -> None:
    gen = torch.Generator().manual_seed(5)
    x_big = torch.randn(4, 9, 30, generator=gen)
    x = x_big.transpose(1, 2)[:, ::2, :]  # (4, 15, 9), strided in every dimension
    w = torch.randn(15, 6, generator=gen).t()  # (6, 15), a transposed view
    assert not x.is_contiguous() and not w.is_contiguous()
    for p in (2.5, 8.0, math.inf):
        y = norm_dist(x, w, p)
        torch.testing.assert_close(y, norm_dist(x.contiguous(), w.contiguous(), p), rtol=0, atol=0)
        torch.testing.assert_close(y, reference.norm_dist(x, w, p), rtol=2e-5, atol=1e-6)


def test_two_dimensional_input_returns_two_dimensional_output() -> None:
    x, w = _inputs("fc", 1, torch.float32)
    y = norm_dist(x, w, 8.0)
    assert y.shape == (x.shape[0], w.shape[0])
    torch.testing.assert_close(y, norm_dist(x.unsqueeze(-1), w, 8.0).squeeze(-1), rtol=0, atol=0)


def test_agrees_with_torch_cdist() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(7, 33, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 33, generator=gen, dtype=torch.float64)
    for p in (1.0, 2.0, 3.5, math.inf):
        torch.testing.assert_close(norm_dist(x, w, p), torch.cdist(x, w, p=p), rtol=1e-12, atol=1e-12)


def test_large_p_is_finite_and_accurate_in_float32() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(8, 64, generator=gen) * 10
    w = torch.randn(16, 64, generator=gen) * 10
    exact = reference.norm_dist(x.double(), w.double(), 1000.0)
    y = norm_dist(x, w, 1000.0)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), exact, rtol=1e-6, atol=0)
    # and it lies between the inf-norm and the 1000-norm bound max * K^(1/p)
    y_inf = norm_dist(x, w, math.inf)
    assert (y >= y_inf * (1 - 1e-6)).all() and (y <= y_inf * 64 ** (1 / 1000) * (1 + 1e-6)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 2.5, 8.0, 1000.0, math.inf])
def test_x_equal_w_gives_zero_and_finite_gradients(p: float, dtype: torch.dtype) -> None:
    """x == w: y = 0; finite p defines the gradient as 0 there (no NaN); p = inf sends it to index 0."""
    w = torch.randn(3, 10, dtype=dtype)
    x = w[1:2].clone().repeat(2, 1).requires_grad_(True)  # both rows equal to w[1]
    wg = w.clone().requires_grad_(True)
    y = norm_dist(x, wg, p)
    assert (y[:, 1] == 0).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(wg.grad).all()
    gx, gw = torch.autograd.grad(norm_dist(x, wg, p)[:, 1].sum(), (x, wg))
    if math.isinf(p):
        # every |x_i - w_i| is 0: the first index, 0, takes it, with a non-negative difference
        expected = torch.zeros_like(gx)
        expected[:, 0] = 1
        assert torch.equal(gx, expected)
        assert gw[1, 0] == -2 and gw.abs().sum() == 2
    else:
        assert (gx == 0).all() and (gw == 0).all()


def test_terms_with_zero_difference_contribute_nothing() -> None:
    """t_i = 0 on some coordinates only: those coordinates get exactly 0 (also for p < 1)."""
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[1.0, 0.0, 3.0, 0.0]], dtype=torch.float64)
    for p in (0.5, 1.0, 2.5, 8.0):
        (gx,) = torch.autograd.grad(norm_dist(x, w, p).sum(), (x,))
        assert gx[0, 0] == 0 and gx[0, 2] == 0 and torch.isfinite(gx).all()


def test_inf_ties_route_the_gradient_to_the_first_index() -> None:
    """The originals' rule: first index reaching the max, sign of x_i - w_i (no splitting)."""
    x = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.5], [0.25, -1.0, 1.0]], requires_grad=True)
    w = torch.zeros(1, 3, requires_grad=True)
    y = norm_dist(x, w, math.inf)
    assert torch.equal(y, torch.ones(3, 1))
    y.sum().backward()
    expected_x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    assert torch.equal(x.grad, expected_x)
    assert torch.equal(w.grad, -expected_x.sum(0, keepdim=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reductions_longer_than_one_cache_block(dtype: torch.dtype) -> None:
    """CI = 1100 spans several of the kernel's reduction blocks (256 floats / 512 doubles): values
    match the reference, and a p = inf tie between channels in different blocks goes to the first."""
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(4, 1100, 2, generator=gen, dtype=dtype) - 0.5
    w = torch.rand(6, 1100, generator=gen, dtype=dtype) - 0.5
    for p in (math.inf, 8.0, 2.5):
        torch.testing.assert_close(norm_dist(x, w, p), reference.norm_dist(x, w, p), **_tol(dtype, p))
    w[:, 900], w[:, 1000] = 2.0, -2.0  # |x - w| = 2 - x or 2 + x: the max sits at 900 or 1000
    x[:, 900] = x[:, 1000] = 0.0  # a tie at exactly 2 between channels 900 and 1000
    xg = x.clone().requires_grad_(True)
    norm_dist(xg, w, math.inf).sum().backward()
    expected = torch.zeros_like(x)
    expected[:, 900] = -6.0  # six outputs, each d|x - w|/dx = sign(0 - 2) = -1 at the first index
    assert torch.equal(xg.grad, expected)


def test_inf_argmax_encoding_of_the_raw_op() -> None:
    x = torch.tensor([[[1.0], [-3.0], [3.0], [2.0]]])  # (1, 4, 1)
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    y, arg = torch.ops.certcore.norm_dist_forward(x, w, math.inf, 1, True)
    assert y.flatten().tolist() == [3.0, 3.0]
    # output 0: |x - w| = [1, 3, 3, 2], first max at 1 with a negative difference -> ~1 = -2
    # output 1: |x - w| = [2, 3, 3, 2], first max at 1, negative -> -2
    assert arg.flatten().tolist() == [-2, -2]
    y2, arg2 = torch.ops.certcore.norm_dist_forward(x, w, math.inf, 1, False)
    assert torch.equal(y, y2) and arg2.numel() == 0 and arg2.dtype == torch.int32
    _, arg3 = torch.ops.certcore.norm_dist_forward(x, w, 2.0, 1, True)
    assert arg3.numel() == 0


@pytest.mark.parametrize("p", [2.0, 8.0, 2.5, math.inf])
def test_nan_and_inf_inputs_propagate(p: float) -> None:
    x = torch.randn(4, 16)
    w = torch.randn(3, 16)
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    y = norm_dist(x, w, p)
    expected = torch.linalg.vector_norm(x[:, None, :] - w[None], ord=p, dim=-1)
    assert torch.isnan(y[1]).all() and torch.isinf(y[2]).all()
    torch.testing.assert_close(y[[0, 3]], expected[[0, 3]], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("scale", [1e-20, 1e15])
@pytest.mark.parametrize("p", [2.0, 8.0, 2.5])
def test_no_overflow_or_underflow_at_extreme_scales(scale: float, p: float) -> None:
    """|x - w| ~ 1e15 overflows |t|^8 in float32 and 1e-20 underflows it: the result stays exact."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(5, 40, generator=gen) * scale
    w = torch.randn(6, 40, generator=gen) * scale
    y = norm_dist(x, w, p)
    exact = reference.norm_dist(x.double(), w.double(), p)
    torch.testing.assert_close(y.double(), exact, rtol=1e-5, atol=0)


def test_no_grad_forward_matches_the_training_forward() -> None:
    x, w = _inputs("conv", 2, torch.float32)
    w.requires_grad_(True)
    y_train = norm_dist(x, w, math.inf, groups=2)
    with torch.no_grad():
        y_eval = norm_dist(x, w, math.inf, groups=2)
    assert torch.equal(y_train.detach(), y_eval)


def test_only_the_needed_gradient_is_computed() -> None:
    x, w = _inputs("fc", 1, torch.float64)
    x.requires_grad_(True)
    for p in (3.0, math.inf):
        (gx,) = torch.autograd.grad(norm_dist(x, w, p).sum(), (x,))
        (gx_ref,) = torch.autograd.grad(reference.norm_dist(x, w, p).sum(), (x,))
        torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)


def test_empty_batch() -> None:
    w = torch.randn(4, 6, requires_grad=True)
    x = torch.randn(0, 6, requires_grad=True)
    for p in (2.0, math.inf):
        y = norm_dist(x, w, p)
        assert y.shape == (0, 4)
        y.sum().backward()
        assert torch.equal(w.grad, torch.zeros_like(w))
        w.grad = None


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"x": torch.randn(2, 6), "w": torch.randn(3, 4)}, ValueError, r"w.shape\[1\] must be CI/groups = 6"),
        (
            {"x": torch.randn(2, 6), "w": torch.randn(3, 3), "groups": 4},
            ValueError,
            "not divisible by groups = 4",
        ),
        ({"x": torch.randn(2, 6), "w": torch.randn(3, 3), "groups": 2}, ValueError, "CO = 3 output channels"),
        (
            {"x": torch.randn(2, 6), "w": torch.randn(3, 6), "groups": 0},
            ValueError,
            "groups must be a positive",
        ),
        ({"x": torch.randn(2, 6), "w": torch.randn(3, 6), "p": 0.0}, ValueError, r"p must be in \(0, inf\]"),
        ({"x": torch.randn(2, 6), "w": torch.randn(3, 6), "p": -2.0}, ValueError, r"p must be in \(0, inf\]"),
        ({"x": torch.randn(2, 6), "w": torch.randn(3, 6), "p": math.nan}, ValueError, r"got nan"),
        ({"x": torch.randn(2, 6), "w": torch.randn(3, 6), "p": "inf"}, TypeError, "p must be a real number"),
        (
            {"x": torch.randn(2, 6), "w": torch.randn(3, 6, dtype=torch.float64)},
            TypeError,
            "w must have the dtype",
        ),
        (
            {"x": torch.randn(2, 6).half(), "w": torch.randn(3, 6).half()},
            TypeError,
            "x must be float32 or float64",
        ),
        ({"x": torch.randn(2, 6, 1, 1), "w": torch.randn(3, 6)}, ValueError, "x must be 2-D"),
        ({"x": torch.randn(2, 6), "w": torch.randn(3, 6, 1)}, ValueError, "w must be 2-D"),
        ({"x": torch.randn(2, 0), "w": torch.randn(3, 0)}, ValueError, "at least one input channel"),
        ({"x": [[1.0]], "w": torch.randn(1, 1)}, TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict, exc: type, match: str) -> None:
    args = {"p": 2.0, "groups": 1, **kwargs}
    with pytest.raises(exc, match=match):
        norm_dist(args["x"], args["w"], args["p"], groups=args["groups"])


def test_device_mix_is_a_clear_error() -> None:
    x = torch.randn(2, 6)
    w = torch.randn(3, 6, device="meta")
    with pytest.raises(ValueError, match="w must be on the device of x"):
        norm_dist(x, w, 2.0)


def test_raw_op_checks_shapes_too() -> None:
    """Calling torch.ops.certcore directly skips the wrapper's checks but must not read out of bounds."""
    if certcore.backend("cpu")["norm_dist"] != "cpu kernel":
        pytest.skip("the C++ kernel's own checks; the reference relies on torch's")
    with pytest.raises(RuntimeError, match="CI/groups"):
        torch.ops.certcore.norm_dist_forward(torch.randn(2, 6, 1), torch.randn(3, 4), 2.0, 1, False)
    y, arg = torch.ops.certcore.norm_dist_forward(torch.randn(2, 6, 1), torch.randn(3, 6), math.inf, 1, True)
    bad = torch.full_like(arg, 99)
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.certcore.norm_dist_backward(
            torch.ones_like(y), torch.randn(2, 6, 1), torch.randn(3, 6), y, bad, math.inf, 1, [True, True]
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("shape", [(100, 70, 1, 150), (2, 12, 133, 20), (7, 8, 1, 300)])
def test_inf_without_argmax_equals_the_argmax_path(shape, groups: int, dtype: torch.dtype) -> None:
    """The no-grad p = inf forward (AVX-512: unpacked, vectors along the output) is bitwise the
    forward that also finds the argmax, on shapes with partial register blocks and output tiles."""
    B, CI, HW, CO = shape
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(B, CI, HW, generator=gen, dtype=dtype)
    w = torch.randn(CO, CI // groups, generator=gen, dtype=dtype)
    y_fast, _ = torch.ops.certcore.norm_dist_forward(x, w, math.inf, groups, False)
    y_arg, _ = torch.ops.certcore.norm_dist_forward(x, w, math.inf, groups, True)
    assert torch.equal(y_fast, y_arg)
    assert torch.equal(y_fast, reference.norm_dist(x, w, math.inf, groups=groups))


@pytest.mark.parametrize("hw", [1, 5])
def test_inf_non_finite_inputs_follow_the_reference(hw: int) -> None:
    """NaN in w, inf − inf = NaN, and inf against a finite value, without and with the argmax."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 16, hw, generator=gen)
    w = torch.randn(6, 16, generator=gen)
    w[1, 3] = float("nan")
    x[2, 7] = float("inf")
    w[4, 7] = float("inf")  # row 2 vs output 4: inf - inf
    x[3, 0] = float("-inf")
    expected = reference.norm_dist(x, w, math.inf)
    for need_argmax in (False, True):
        y, _ = torch.ops.certcore.norm_dist_forward(x, w, math.inf, 1, need_argmax)
        torch.testing.assert_close(y, expected, rtol=0, atol=0, equal_nan=True)
