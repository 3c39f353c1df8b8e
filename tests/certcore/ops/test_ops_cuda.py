"""CUDA kernels of the certcore ops against the pure-PyTorch reference and the CPU op.

Every test needs a GPU (``cuda`` marker: skipped where none is present). The oracle is
``certcore.ops.reference`` run on CPU copies: in float64 for values and gradients, and in the
input dtype where exact equality is expected (argmax codes and the bounds of ``bound_inf_dist``,
whose ties depend on the rounding of ``x - w``, identical on both devices).

The shapes are chosen to hit every edge of the kernels' tiling (64 x 64 output tiles, reduction
chunks of 16): CI/groups and CO/groups not multiples of 16 or 64, B*HW not a multiple of 64, FC
layers (HW = 1, channel-contiguous loads) and conv layers (HW > 1, spatially contiguous loads),
several reduction chunks, and split-K slices of the weight gradient.
"""

from __future__ import annotations

import math

import pytest
import torch

import certcore.ops  # noqa: F401  (registers the ops)
from certcore.ops import reference as R

pytestmark = pytest.mark.cuda

OPS = torch.ops.certcore
INT32_MIN = -(2**31)
PS = [1.0, 2.0, 2.5, 8.0, 1000.0, math.inf]
DTYPES = [torch.float32, torch.float64]
# (B, CI_g, HW, CO_g): FC with two n tiles, conv with N = 87, and several k / o tiles
LAYOUTS = {
    "fc": (70, 19, 1, 37),
    "conv": (3, 19, 29, 37),
    "wide": (5, 150, 1, 130),
}


def _has_cuda_kernel(name: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"certcore::{name}", "CUDA")


@pytest.fixture(autouse=True)
def _need_cuda_kernels(request):
    if request.node.name.startswith("test_cuda_kernels_are_registered"):
        return
    if not all(_has_cuda_kernel(n) for n in ("norm_dist_forward", "bound_inf_dist_forward")):
        pytest.skip("certcore._C was built without its CUDA kernels (rebuild with CERTCORE_CUDA=1)")


def test_cuda_kernels_are_registered():
    missing = [
        n
        for n in (
            "norm_dist_forward",
            "norm_dist_backward",
            "bound_inf_dist_forward",
            "bound_inf_dist_backward",
        )
        if not _has_cuda_kernel(n)
    ]
    assert not missing, f"no CUDA kernel for {missing}: build certcore with CERTCORE_CUDA=1"


# ---------------------------------------------------------------------------------------------
# helpers


def _data(layout: str, groups: int, dtype: torch.dtype, seed: int = 0, scale: float = 1.0):
    B, CIg, HW, COg = LAYOUTS[layout]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, CIg * groups, HW, generator=g, dtype=dtype) * scale
    w = torch.randn(COg * groups, CIg, generator=g, dtype=dtype) * scale
    return x, w


def _fwd_tol(dtype):
    return 2e-5 if dtype == torch.float32 else 1e-12


def _bwd_tol(dtype, p):
    if dtype == torch.float64:
        return 1e-9
    # float32 at large p: (|t|/y)^(p-1) amplifies the rounding of y and t by p-1 (1000 * 6e-8).
    return 2e-3 if p >= 100 else 1e-4


def _assert_close(actual, expected, rtol, what):
    expected = expected.to(torch.float64)
    actual = actual.detach().cpu().to(torch.float64)
    atol = rtol * max(1.0, float(expected.abs().max())) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _cuda(*ts):
    return tuple(t.cuda() for t in ts)


# ---------------------------------------------------------------------------------------------
# norm_dist


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("p", PS, ids=lambda p: f"p{p:g}")
def test_norm_dist_forward_matches_reference(p, groups, layout, dtype):
    if layout == "wide" and groups == 4:
        pytest.skip("covered by the other group counts")
    x, w = _data(layout, groups, dtype, seed=1)
    y, arg = OPS.norm_dist_forward(*_cuda(x, w), p, groups, True)
    assert y.is_cuda and y.dtype == dtype and y.shape == (x.shape[0], w.shape[0], x.shape[2])
    y_ref, _ = R.norm_dist_forward(x.double(), w.double(), p, groups, False)
    _assert_close(y, y_ref, _fwd_tol(dtype), f"y p={p}")
    if math.isinf(p):
        # same dtype on CPU: identical differences, so identical first-index argmax codes
        _, arg_ref = R.norm_dist_forward(x, w, p, groups, True)
        assert arg.dtype == torch.int32 and torch.equal(arg.cpu(), arg_ref)
        y2, arg2 = OPS.norm_dist_forward(*_cuda(x, w), p, groups, False)
        assert arg2.numel() == 0 and arg2.dtype == torch.int32 and arg2.is_cuda
        assert torch.equal(y2, y)
    else:
        assert arg.numel() == 0 and arg.dtype == torch.int32


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("p", PS, ids=lambda p: f"p{p:g}")
def test_norm_dist_backward_matches_reference(p, groups, layout, dtype):
    if layout == "wide" and groups == 4:
        pytest.skip("covered by the other group counts")
    x, w = _data(layout, groups, dtype, seed=2)
    xc, wc = _cuda(x, w)
    y, arg = OPS.norm_dist_forward(xc, wc, p, groups, True)
    gy = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    gx, gw = OPS.norm_dist_backward(gy.cuda(), xc, wc, y, arg, p, groups, [True, True])
    # the oracle uses the kernel's own y and argmax (the backward is defined from the saved output)
    gx_ref, gw_ref = R.norm_dist_backward(
        gy.double(), x.double(), w.double(), y.cpu().double(), arg.cpu(), p, groups, [True, True]
    )
    tol = _bwd_tol(dtype, p)
    _assert_close(gx, gx_ref, tol, f"grad_x p={p}")
    _assert_close(gw, gw_ref, tol, f"grad_w p={p}")
    # output_mask: the skipped gradient is empty, the other one is unchanged
    gx1, gw1 = OPS.norm_dist_backward(gy.cuda(), xc, wc, y, arg, p, groups, [True, False])
    gx2, gw2 = OPS.norm_dist_backward(gy.cuda(), xc, wc, y, arg, p, groups, [False, True])
    assert gw1.numel() == 0 and gx2.numel() == 0
    assert torch.equal(gx1, gx) and torch.equal(gw2, gw)


@pytest.mark.parametrize("p", PS, ids=lambda p: f"p{p:g}")
def test_norm_dist_cuda_matches_cpu_op(p):
    x, w = _data("conv", 2, torch.float32, seed=4)
    y_cpu, a_cpu = OPS.norm_dist_forward(x, w, p, 2, True)
    y, a = OPS.norm_dist_forward(*_cuda(x, w), p, 2, True)
    _assert_close(y, y_cpu, 1e-5, "y")
    assert torch.equal(a.cpu(), a_cpu)
    gy = torch.randn_like(y_cpu)
    g_cpu = OPS.norm_dist_backward(gy, x, w, y_cpu, a_cpu, p, 2, [True, True])
    g = OPS.norm_dist_backward(gy.cuda(), *_cuda(x, w), y, a, p, 2, [True, True])
    for k in range(2):
        _assert_close(g[k], g_cpu[k], _bwd_tol(torch.float32, p), f"grad {k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_norm_dist_large_p_is_finite_and_accurate(dtype):
    # p = 1000 with differences up to ~1e3: a naive sum of |t|^p overflows float32 everywhere.
    x, w = _data("fc", 1, dtype, seed=5, scale=300.0)
    y, _ = OPS.norm_dist_forward(*_cuda(x, w), 1000.0, 1, False)
    assert torch.isfinite(y).all()
    y_ref, _ = R.norm_dist_forward(x.double(), w.double(), 1000.0, 1, False)
    _assert_close(y, y_ref, _fwd_tol(dtype), "y p=1000")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("p", PS, ids=lambda p: f"p{p:g}")
def test_norm_dist_ties_zeros_and_exact_matches(p, dtype):
    # integer data: many ties (first index wins) and exact zeros (t == 0, and y == 0 where x == w)
    g = torch.Generator().manual_seed(6)
    x = torch.randint(-2, 3, (6, 24, 3), generator=g).to(dtype)
    w = torch.randint(-2, 3, (10, 12), generator=g).to(dtype)
    w[0] = x[0, :12, 0]  # y[0, 0, 0] == 0
    xc, wc = _cuda(x, w)
    y, arg = OPS.norm_dist_forward(xc, wc, p, 2, True)
    assert y[0, 0, 0].item() == 0
    y_ref, arg_ref = R.norm_dist_forward(x, w, p, 2, True)
    _assert_close(y, y_ref, _fwd_tol(dtype), "y")
    assert torch.equal(arg.cpu(), arg_ref)
    gy = torch.randn(y.shape, dtype=dtype, generator=g)
    gx, gw = OPS.norm_dist_backward(gy.cuda(), xc, wc, y, arg, p, 2, [True, True])
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
    gx_ref, gw_ref = R.norm_dist_backward(gy, x, w, y.cpu(), arg.cpu(), p, 2, [True, True])
    tol = _bwd_tol(dtype, p)
    _assert_close(gx, gx_ref, tol, "grad_x")
    _assert_close(gw, gw_ref, tol, "grad_w")


def test_norm_dist_nan_and_inf_follow_the_reference():
    x, w = _data("conv", 2, torch.float32, seed=7)
    x[0, 3, 0] = float("nan")
    x[1, 25, 1] = float("inf")
    x[2, 5, 2] = -float("inf")
    for p in PS:
        y, a = OPS.norm_dist_forward(*_cuda(x, w), p, 2, True)
        y_ref, a_ref = R.norm_dist_forward(x, w, p, 2, True)
        torch.testing.assert_close(y.cpu(), y_ref, rtol=2e-5, atol=0, equal_nan=True)
        assert torch.equal(a.cpu(), a_ref)


@pytest.mark.parametrize("p", [1.0, 2.0, 2.5, 8.0, math.inf], ids=lambda p: f"p{p:g}")
@pytest.mark.parametrize("layout", ["fc", "conv"])
def test_norm_dist_gradcheck(p, layout):
    g = torch.Generator().manual_seed(8)
    HW = 1 if layout == "fc" else 4
    x = torch.randn(3, 6, HW, dtype=torch.float64, generator=g).cuda().requires_grad_()
    w = torch.randn(4, 3, dtype=torch.float64, generator=g).cuda().requires_grad_()
    fn = lambda x, w: certcore.ops.norm_dist(x, w, p, groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-5)


def test_norm_dist_autograd_matches_reference():
    x, w = _data("conv", 2, torch.float64, seed=9)
    for p in PS:
        xc, wc = (t.cuda().detach().requires_grad_() for t in (x, w))
        y = certcore.ops.norm_dist(xc, wc, p, groups=2)
        (y * torch.arange(y.numel(), device="cuda").view_as(y).sin()).sum().backward()
        xr, wr = (t.detach().clone().requires_grad_() for t in (x, w))
        yr = R.norm_dist(xr, wr, p, groups=2)
        (yr * torch.arange(yr.numel()).view_as(yr).sin()).sum().backward()
        _assert_close(y, yr.detach(), 1e-12, f"y p={p}")
        _assert_close(xc.grad, xr.grad, 1e-9, f"x.grad p={p}")
        _assert_close(wc.grad, wr.grad, 1e-9, f"w.grad p={p}")


@pytest.mark.parametrize("p", PS, ids=lambda p: f"p{p:g}")
def test_norm_dist_backward_is_deterministic(p):
    # B*HW = 2400 splits the weight-gradient reduction into several slices
    g = torch.Generator().manual_seed(10)
    x = torch.randn(8, 40, 300, generator=g).cuda()
    w = torch.randn(24, 20, generator=g).cuda()
    y, a = OPS.norm_dist_forward(x, w, p, 2, True)
    gy = torch.randn(y.shape, generator=g).cuda()
    g1 = OPS.norm_dist_backward(gy, x, w, y, a, p, 2, [True, True])
    g2 = OPS.norm_dist_backward(gy, x, w, y, a, p, 2, [True, True])
    assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
    g_ref = R.norm_dist_backward(
        gy.cpu().double(), x.cpu().double(), w.cpu().double(), y.cpu().double(), a.cpu(), p, 2, [True, True]
    )
    _assert_close(g1[0], g_ref[0], _bwd_tol(torch.float32, p), "grad_x")
    _assert_close(g1[1], g_ref[1], _bwd_tol(torch.float32, p), "grad_w")


@pytest.mark.parametrize("p", [2.0, 2.5, math.inf], ids=lambda p: f"p{p:g}")
def test_norm_dist_opcheck(p):
    x, w = _data("conv", 2, torch.float64, seed=11)
    x, w = (t.cuda().requires_grad_() for t in (x, w))
    torch.library.opcheck(OPS.norm_dist_forward.default, (x, w, p, 2, True))
    with torch.no_grad():
        y, a = OPS.norm_dist_forward(x, w, p, 2, True)
    torch.library.opcheck(OPS.norm_dist_forward.default, (x.detach(), w.detach(), p, 2, False))
    gy = torch.randn_like(y)
    for mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(OPS.norm_dist_backward.default, (gy, x.detach(), w.detach(), y, a, p, 2, mask))


# ---------------------------------------------------------------------------------------------
# bound_inf_dist


def _bounds(layout, groups, dtype, seed, ints=False, centred_row=True):
    x, w = _data(layout, groups, dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    if ints:
        lo = torch.randint(-3, 3, x.shape, generator=g).to(dtype)
        up = lo + torch.randint(0, 3, x.shape, generator=g).to(dtype)
        w = torch.randint(-3, 3, w.shape, generator=g).to(dtype)
    else:
        r = torch.rand(x.shape, generator=g, dtype=dtype) * 0.5
        lo, up, w = x - r, x + r, w * 0.6
    if centred_row:
        # output 0 at (b, s) = (0, 0) has every interval centred on its weight: y_lower = 0 and
        # arg_lower = INT32_MIN, and u - w = w - l ties at every index (the u side wins)
        w[0] = (lo[0, : w.shape[1], 0] + up[0, : w.shape[1], 0]) / 2
    return lo, up, w


@pytest.mark.parametrize("ints", [False, True], ids=["random", "ties"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_bound_inf_dist_matches_reference(groups, layout, dtype, ints):
    if layout == "wide" and groups == 4:
        pytest.skip("covered by the other group counts")
    lo, up, w = _bounds(layout, groups, dtype, seed=12, ints=ints)
    out = OPS.bound_inf_dist_forward(*_cuda(lo, up, w), groups)
    ref = R.bound_inf_dist_forward(lo, up, w, groups)  # same dtype: the maxima are exact
    for k, name in enumerate(["y_lower", "y_upper", "arg_lower", "arg_upper"]):
        assert out[k].is_cuda and out[k].dtype == ref[k].dtype
        assert torch.equal(out[k].cpu(), ref[k]), name
    assert out[2][0, 0, 0].item() == INT32_MIN and out[0][0, 0, 0].item() == 0
    CI = lo.shape[1]
    g = torch.Generator().manual_seed(13)
    g_lo = torch.randn(out[0].shape, dtype=dtype, generator=g)
    g_up = torch.randn(out[1].shape, dtype=dtype, generator=g)
    grads = OPS.bound_inf_dist_backward(
        g_lo.cuda(), g_up.cuda(), out[2], out[3], w.cuda(), CI, groups, [True] * 3
    )
    grads_ref = R.bound_inf_dist_backward(
        g_lo.double(), g_up.double(), ref[2], ref[3], w.double(), CI, groups, [True] * 3
    )
    for k, name in enumerate(["grad_lower", "grad_upper", "grad_w"]):
        _assert_close(grads[k], grads_ref[k], 1e-5 if dtype == torch.float32 else 1e-12, name)
    for mask in ([True, False, False], [False, True, False], [False, False, True], [True, False, True]):
        part = OPS.bound_inf_dist_backward(
            g_lo.cuda(), g_up.cuda(), out[2], out[3], w.cuda(), CI, groups, mask
        )
        for k in range(3):
            if mask[k]:
                assert torch.equal(part[k], grads[k])
            else:
                assert part[k].numel() == 0


def test_bound_inf_dist_cuda_matches_cpu_op():
    lo, up, w = _bounds("conv", 2, torch.float32, seed=14)
    out = OPS.bound_inf_dist_forward(*_cuda(lo, up, w), 2)
    out_cpu = OPS.bound_inf_dist_forward(lo, up, w, 2)
    for a, b in zip(out, out_cpu):
        assert torch.equal(a.cpu(), b)
    g_lo, g_up = torch.randn_like(out_cpu[0]), torch.randn_like(out_cpu[1])
    gr = OPS.bound_inf_dist_backward(
        g_lo.cuda(), g_up.cuda(), out[2], out[3], w.cuda(), lo.shape[1], 2, [True] * 3
    )
    gr_cpu = OPS.bound_inf_dist_backward(g_lo, g_up, out_cpu[2], out_cpu[3], w, lo.shape[1], 2, [True] * 3)
    for a, b in zip(gr, gr_cpu):
        _assert_close(a, b, 1e-5, "grad")


def test_bound_inf_dist_backward_is_deterministic():
    g = torch.Generator().manual_seed(15)
    c = torch.randn(8, 40, 300, generator=g)
    r = torch.rand(c.shape, generator=g) * 0.3
    lo, up, w = _cuda(c - r, c + r, torch.randn(24, 20, generator=g))
    out = OPS.bound_inf_dist_forward(lo, up, w, 2)
    g_lo, g_up = torch.randn_like(out[0]), torch.randn_like(out[1])
    a = OPS.bound_inf_dist_backward(g_lo, g_up, out[2], out[3], w, 40, 2, [True] * 3)
    b = OPS.bound_inf_dist_backward(g_lo, g_up, out[2], out[3], w, 40, 2, [True] * 3)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_bound_inf_dist_gradcheck():
    lo, up, w = _bounds("conv", 2, torch.float64, seed=16, centred_row=False)  # no kinks at the point
    lo, up, w = (t[:2, :, :3].contiguous() if t.dim() == 3 else t[:6] for t in (lo, up, w))
    lo, up, w = (t.cuda().requires_grad_() for t in (lo, up, w))
    fn = lambda lo, up, w: certcore.ops.bound_inf_dist(lo, up, w, groups=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (lo, up, w), eps=1e-6, atol=1e-5)


def test_bound_inf_dist_opcheck():
    lo, up, w = _bounds("conv", 2, torch.float64, seed=17)
    lo, up, w = (t.cuda().requires_grad_() for t in (lo, up, w))
    torch.library.opcheck(OPS.bound_inf_dist_forward.default, (lo, up, w, 2))
    with torch.no_grad():
        out = OPS.bound_inf_dist_forward(lo, up, w, 2)
    g_lo, g_up = torch.randn_like(out[0]), torch.randn_like(out[1])
    for mask in ([True, True, True], [False, True, False], [True, False, True]):
        torch.library.opcheck(
            OPS.bound_inf_dist_backward.default,
            (g_lo, g_up, out[2], out[3], w.detach(), lo.shape[1], 2, mask),
        )


# ---------------------------------------------------------------------------------------------
# launch environment: streams, devices, argument checks


def test_ops_run_on_the_current_stream():
    x, w = _cuda(*_data("conv", 2, torch.float32, seed=18))
    y0, a0 = OPS.norm_dist_forward(x, w, math.inf, 2, True)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        y1, a1 = OPS.norm_dist_forward(x, w, math.inf, 2, True)
        g1 = OPS.norm_dist_backward(torch.ones_like(y1), x, w, y1, a1, math.inf, 2, [True, True])
    s.synchronize()
    g0 = OPS.norm_dist_backward(torch.ones_like(y0), x, w, y0, a0, math.inf, 2, [True, True])
    assert torch.equal(y0, y1) and torch.equal(a0, a1)
    assert torch.equal(g0[0], g1[0]) and torch.equal(g0[1], g1[1])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ops_run_on_the_inputs_device():
    x, w = _data("conv", 2, torch.float32, seed=19)
    y_ref, _ = OPS.norm_dist_forward(x.cuda(0), w.cuda(0), 2.5, 2, False)
    with torch.cuda.device(0):
        y, _ = OPS.norm_dist_forward(x.cuda(1), w.cuda(1), 2.5, 2, False)
    assert y.device == torch.device("cuda", 1)
    assert torch.equal(y.cpu(), y_ref.cpu())


def test_raw_ops_reject_unsafe_arguments():
    x, w = _cuda(*_data("conv", 2, torch.float32, seed=20))
    with pytest.raises(RuntimeError, match="contiguous"):
        OPS.norm_dist_forward(x.transpose(0, 2).contiguous().transpose(0, 2), w, 2.0, 2, False)
    with pytest.raises(RuntimeError):
        OPS.norm_dist_forward(x, w.cpu(), 2.0, 2, False)
    with pytest.raises(RuntimeError, match="dtype"):
        OPS.norm_dist_forward(x, w.double(), 2.0, 2, False)
    with pytest.raises(RuntimeError):
        OPS.norm_dist_forward(x, w[:, :5].contiguous(), 2.0, 2, False)
    with pytest.raises(RuntimeError):
        OPS.norm_dist_forward(x.to(torch.float16), w.to(torch.float16), 2.0, 2, False)
    y, a = OPS.norm_dist_forward(x, w, math.inf, 2, True)
    with pytest.raises(RuntimeError, match="argmax"):
        OPS.norm_dist_backward(torch.ones_like(y), x, w, y, a[:1].contiguous(), math.inf, 2, [True, True])
    with pytest.raises(RuntimeError):
        OPS.bound_inf_dist_forward(x, x[:1].contiguous(), w, 2)


def test_empty_shapes():
    w = torch.randn(6, 4, device="cuda")
    for p in PS:
        y, a = OPS.norm_dist_forward(torch.randn(0, 8, 3, device="cuda"), w, p, 2, True)
        assert y.shape == (0, 6, 3)
        gx, gw = OPS.norm_dist_backward(
            torch.randn(0, 6, 3, device="cuda"),
            torch.randn(0, 8, 3, device="cuda"),
            w,
            y,
            a,
            p,
            2,
            [True, True],
        )
        assert gx.shape == (0, 8, 3) and gw.shape == (6, 4) and (gw == 0).all()


# ---------------------------------------------------------------------------------------------
# 64-bit indexing: more than 2^31 outputs (about 35 GB of GPU memory, a few seconds)


def _free_gpu_bytes() -> int:
    free, _ = torch.cuda.mem_get_info()
    return free


@pytest.mark.slow
@pytest.mark.parametrize("case", ["long_hw", "many_rows"])
def test_norm_dist_64bit_indexing(case):
    if _free_gpu_bytes() < 40 * 2**30:
        pytest.skip("needs about 40 GB of free GPU memory")
    torch.cuda.empty_cache()
    tail = 1 << 16
    if case == "long_hw":
        # N = B*HW > 2^31 (one channel): n, its tile index and every offset exceed int32
        B, CI, HW, CO = 1, 1, (1 << 31) + 777, 1
    else:
        # B*CO*HW > 2^31 with small N: the (b*CO + o)*HW offsets exceed int32
        B, CI, HW, CO = (1 << 22) + 3, 2, 1, 520
    g = torch.Generator(device="cuda").manual_seed(21)
    x = torch.randn(B, CI, HW, device="cuda", generator=g)
    w = torch.randn(CO, CI, device="cuda", generator=g)

    def expected(xs):  # reference for a slice of rows / positions, on the GPU in float64
        t = xs.double()[:, None, :, :] - w.double()[None, :, :, None]  # (b, CO, CI, s)
        return t.abs().amax(2), t.pow(2).sum(2).sqrt()

    y, a = OPS.norm_dist_forward(x, w, math.inf, 1, True)
    y2, _ = OPS.norm_dist_forward(x, w, 2.0, 1, False)
    if case == "long_hw":
        pieces = [(slice(None), slice(0, tail)), (slice(None), slice(HW - tail, HW))]
        sl = lambda t, pc: t[:, :, pc[1]]  # noqa: E731
    else:
        pieces = [(slice(0, 64), None), (slice(B - 64, B), None)]
        sl = lambda t, pc: t[pc[0]]  # noqa: E731
    for pc in pieces:
        e_inf, e_2 = expected(sl(x, pc))
        torch.testing.assert_close(sl(y, pc).double(), e_inf, rtol=1e-6, atol=0)
        torch.testing.assert_close(sl(y2, pc).double(), e_2, rtol=2e-5, atol=0)
    del y2
    # grad_y = y (no extra 8 GB buffer): at p = inf the gradient is g * sign(t) at the argmax.
    gx, _ = OPS.norm_dist_backward(y, x, w, y, a, math.inf, 1, [True, False])
    if case == "long_hw":
        # one input and one output channel: grad_x = |t| * sign(t) = x - w
        for pc in pieces:
            torch.testing.assert_close(sl(gx, pc), sl(x, pc) - w[0, 0])
    else:
        for pc in pieces:
            xs, ys, as_ = sl(x, pc), sl(y, pc), sl(a, pc)
            exp, _ = R.norm_dist_backward(
                ys.cpu(), xs.cpu(), w.cpu(), ys.cpu(), as_.cpu(), math.inf, 1, [True, False]
            )
            torch.testing.assert_close(sl(gx, pc).cpu(), exp)
