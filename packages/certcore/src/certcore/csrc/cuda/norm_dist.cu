// CUDA kernels of certcore::norm_dist_forward (this file) and certcore::norm_dist_backward
// (norm_dist_backward.cu).
//
//   y[b, o, s] = ( sum_{i < CI_g} |t_i|^p )^(1/p),   t_i = x[b, g*CI_g + i, s] - w[o, i],  g = o / CO_g.
//
// Forward: a GEMM-like kernel over the (n, o) output plane (n = b*HW + s) with the reduction over i,
// one template per algorithm:
//   * norm_dist_fwd_int_kernel<P>   integer p = P in 1..8: acc = sum |t|^P by repeated multiplication
//                                   (no rescaling: float32 overflows once |t| ~ 3e38^(1/P)).
//   * norm_dist_fwd_general_kernel  any other finite p: running-max rescaling. With m = max |t| so far
//                                   and acc = sum (|t|/m)^p (the max term contributes 1),
//                                   y = m * acc^(1/p); when m grows to m', acc *= (m/m')^p. Every term
//                                   is <= 1, so this is finite and accurate up to p = 1000 in float32.
//                                   y = 0 when all t = 0.
//   * norm_dist_fwd_inf_kernel      p = inf: y = max |t|, optional argmax code (first index reaching
//                                   the max; i if t_i >= 0, ~i if t_i < 0).
// No EPS floor anywhere: outputs are exact (up to rounding).
//
// Backward (finite p), with r = 1/y (r = 0 where y == 0) and sgnpow(u) = sign(u) |u|^(p-1):
//   dL/dx[b, g*CI_g+i, s] =  sum_{o in g}  gy[b,o,s] * sgnpow(t * r[b,o,s])
//   dL/dw[o, i]           = -sum_{b, s}    gy[b,o,s] * sgnpow(t * r[b,o,s])
// (t * r = sign(t) |t|/y with |t|/y <= 1, so no overflow for large p; the contribution is 0 where
// y == 0 or t == 0). Both are GEMM-like kernels: grad_x tiles (n, i) and reduces over o; grad_w
// tiles (o, i) and reduces over n, split into slices whose partial sums are added in a fixed order
// by a second kernel (deterministic, no atomics).
// Backward (p = inf): the gradient flows only through the argmax index (common.cuh, argmax scatter),
// also deterministic.
#include "norm_dist.cuh"

#include <ATen/ops/full.h>
#include <torch/library.h>

#include <tuple>

namespace certcore::cuda {
namespace {

using namespace norm_dist_detail;

// ---------------------------------------------------------------------------------------------
// Forward kernels. Output plane: rows n (tile n0 + 0..63), columns o (o0 + 0..63 within group g),
// laid out by FwdTile (common.cuh). Shared tiles per reduction chunk k0..k0+15:
//   xs[k][c] = x[n0 + c, channel g*CI_g + k0 + k],  ws[k][c] = w[g*CO_g + o0 + c, k0 + k].
// Thread (row, col) owns outputs (n0 + row + 16m, o0 + col + 16j), m, j < 4; for each k it combines
// a = xs[k][row + 16m] with b = ws[k][col + 16j] (for_each_pair), t = a - b.
// ---------------------------------------------------------------------------------------------

// Integer p = P: acc = sum_i |t_i|^P, y = acc^(1/P).
template <typename T, int P>
__global__ void __launch_bounds__(kThreads) norm_dist_fwd_int_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                                      T* __restrict__ y, Shape sh) {
  __shared__ SmemTile<T> xs, ws;
  const FwdTile tile(sh);
  const ChannelRowsLoader<T> xl(x, sh.N, sh.HW, sh.CI, tile.g * sh.CI_g, sh.CI_g, tile.n0);
  const ThreadMap tm(sh.HW > 1);

  T acc[kReg][kReg];
  fill_regs(acc, T(0));

  for (int k0 = 0; k0 < sh.CI_g; k0 += kBK) {
    xl.load(xs, k0);
    tile.load_w(ws, w, sh, k0);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      for_each_pair(xs[k], ws[k], tm, [&](int m, int j, T a, T b) {
        const T t = a - b;
        // even P: t^P = |t|^P without the abs.
        acc[m][j] += pown<P>(P % 2 == 0 ? t : fabs(t));
      });
    }
    __syncthreads();
  }

  tile.for_each_output(sh, tm, [&](int m, int j, int64_t off) {
    const T a = acc[m][j];
    T v;
    if constexpr (P == 1) {
      v = a;
    } else if constexpr (P == 2) {
      v = sqrt(a);
    } else {
      v = dev_pow(a, T(1) / T(P));  // pow(0, 1/P) = 0
    }
    y[off] = v;
  });
}

// General finite p with running-max rescaling (see the file comment). Per chunk of 16 indices:
//   pass 1: m' = max(m, max_k |t_k|);  if m' > m: acc *= (m/m')^p, m = m', r = 1/m'
//   pass 2: acc += (|t_k| * r)^p = 2^(p * log2(|t_k| * r))   (|t_k| * r <= 1; t_k = 0 gives 2^-inf = 0)
// While m = 0 (every t so far is 0), r = 0 and acc stays 0. y = m * acc^(1/p), or 0 when m = 0.
template <typename T>
__global__ void __launch_bounds__(kThreads) norm_dist_fwd_general_kernel(const T* __restrict__ x,
                                                                          const T* __restrict__ w, T* __restrict__ y,
                                                                          Shape sh, T p) {
  __shared__ SmemTile<T> xs, ws;
  const FwdTile tile(sh);
  const ChannelRowsLoader<T> xl(x, sh.N, sh.HW, sh.CI, tile.g * sh.CI_g, sh.CI_g, tile.n0);
  const ThreadMap tm(sh.HW > 1);

  T mx[kReg][kReg], acc[kReg][kReg], rcp[kReg][kReg];
  fill_regs(mx, T(0));
  fill_regs(acc, T(0));
  fill_regs(rcp, T(0));

  for (int k0 = 0; k0 < sh.CI_g; k0 += kBK) {
    xl.load(xs, k0);
    tile.load_w(ws, w, sh, k0);
    __syncthreads();

    // Pass 1: the chunk's maximum of |t| joins the running maximum.
    T nm[kReg][kReg];
#pragma unroll
    for (int m = 0; m < kReg; ++m)
#pragma unroll
      for (int j = 0; j < kReg; ++j) nm[m][j] = mx[m][j];
#pragma unroll 4
    for (int k = 0; k < kBK; ++k) {
      for_each_pair(xs[k], ws[k], tm, [&](int m, int j, T a, T b) {
        // NaN-propagating max: a NaN |t| sticks (y is NaN then, as in the reference).
        const T at = fabs(a - b);
        nm[m][j] = (at > nm[m][j] || at != at) ? at : nm[m][j];
      });
    }
    // Rescale the accumulated sum to the new maximum (mx = 0 -> factor 2^-inf = 0, and acc = 0 anyway).
#pragma unroll
    for (int m = 0; m < kReg; ++m)
#pragma unroll
      for (int j = 0; j < kReg; ++j) {
        if (nm[m][j] > mx[m][j] || (nm[m][j] != nm[m][j] && mx[m][j] == mx[m][j])) {
          acc[m][j] *= dev_exp2(p * dev_log2(mx[m][j] / nm[m][j]));
          mx[m][j] = nm[m][j];
          rcp[m][j] = T(1) / nm[m][j];
        }
      }
    // Pass 2: add the chunk's terms relative to the maximum. (Not unrolled over k: 16 inlined
    // exp2/log2 per step are enough, full unrolling only makes the kernel spill.)
#pragma unroll 1
    for (int k = 0; k < kBK; ++k) {
      for_each_pair(xs[k], ws[k], tm, [&](int m, int j, T a, T b) {
        acc[m][j] += dev_exp2(p * dev_log2(fabs(a - b) * rcp[m][j]));
      });
    }
    __syncthreads();
  }

  // m = inf (an infinite difference) gives y = inf, m = NaN gives NaN (acc may be NaN in both cases).
  const T inv_p = T(1) / p;
  tile.for_each_output(sh, tm, [&](int m, int j, int64_t off) {
    const T mv = mx[m][j];
    y[off] = (isnan(mv) || isinf(mv)) ? mv : (mv > T(0) ? mv * dev_pow(acc[m][j], inv_p) : T(0));
  });
}

// p = inf: y = max_i |t_i|. The scan runs over i in increasing order with a strict '>' so ties keep
// the FIRST index. Starting from (max 0, code 0) is the same as starting at i = 0 when |t_0| = 0
// (code 0 = "index 0, t >= 0"), and padded indices (t = 0) never win. As in the reference, a NaN
// difference counts as reaching the max: the first NaN wins and sticks (y = NaN, code ~i since
// "t >= 0" is false for NaN).
template <typename T, bool kArgmax>
__global__ void __launch_bounds__(kThreads) norm_dist_fwd_inf_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                                      T* __restrict__ y, int32_t* __restrict__ argmax,
                                                                      Shape sh) {
  __shared__ SmemTile<T> xs, ws;
  const FwdTile tile(sh);
  const ChannelRowsLoader<T> xl(x, sh.N, sh.HW, sh.CI, tile.g * sh.CI_g, sh.CI_g, tile.n0);
  const ThreadMap tm(sh.HW > 1);

  T mv[kReg][kReg];
  int32_t code[kReg][kReg];
  fill_regs(mv, T(0));
  fill_regs(code, 0);

  for (int k0 = 0; k0 < sh.CI_g; k0 += kBK) {
    xl.load(xs, k0);
    tile.load_w(ws, w, sh, k0);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
      const int32_t i = k0 + k;
      for_each_pair(xs[k], ws[k], tm, [&](int m, int j, T a, T b) {
        const T t = a - b;
        const T at = fabs(t);
        const bool gt = at > mv[m][j] || (at != at && mv[m][j] == mv[m][j]);
        mv[m][j] = gt ? at : mv[m][j];
        if constexpr (kArgmax) code[m][j] = gt ? (t >= T(0) ? i : ~i) : code[m][j];
      });
    }
    __syncthreads();
  }

  tile.for_each_output(sh, tm, [&](int m, int j, int64_t off) {
    y[off] = mv[m][j];
    if constexpr (kArgmax) argmax[off] = code[m][j];
  });
}

// ---------------------------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------------------------

template <typename T>
void launch_forward(const at::Tensor& x, const at::Tensor& w, at::Tensor& y, at::Tensor& argmax, double p,
                    bool need_argmax, Shape sh, cudaStream_t stream) {
  sh.t0 = ceil_div(sh.N, kTile);
  sh.t1 = ceil_div(sh.CO_g, kTile);
  const unsigned grid = grid_of(sh.t0 * sh.t1 * sh.G);
  const T* xp = x.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  if (std::isinf(p)) {
    if (need_argmax) {
      norm_dist_fwd_inf_kernel<T, true><<<grid, kThreads, 0, stream>>>(xp, wp, yp, argmax.data_ptr<int32_t>(), sh);
    } else {
      norm_dist_fwd_inf_kernel<T, false><<<grid, kThreads, 0, stream>>>(xp, wp, yp, nullptr, sh);
    }
  } else if (const int P = small_int_p(p); P != 0) {
    dispatch_int_p(P, [&](auto pc) {
      norm_dist_fwd_int_kernel<T, decltype(pc)::value><<<grid, kThreads, 0, stream>>>(xp, wp, yp, sh);
    });
  } else {
    norm_dist_fwd_general_kernel<T><<<grid, kThreads, 0, stream>>>(xp, wp, yp, sh, static_cast<T>(p));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> norm_dist_forward_cuda(const at::Tensor& x, const at::Tensor& w, double p,
                                                          int64_t groups, bool need_argmax) {
  const Dims d = check_norm_dist_inputs(x, w, p, groups);
  const c10::cuda::CUDAGuard guard(x.device());
  const bool want_arg = need_argmax && std::isinf(p);
  const auto int_opts = x.options().dtype(at::kInt);
  if (d.CI_g == 0) {
    // Empty reduction: y = 0 and "no index" (INT32_MIN, no gradient).
    return {at::zeros({d.B, d.CO, d.HW}, x.options()),
            want_arg ? at::full({d.B, d.CO, d.HW}, INT32_MIN, int_opts) : at::empty({0}, int_opts)};
  }
  at::Tensor y = at::empty({d.B, d.CO, d.HW}, x.options());
  at::Tensor argmax = want_arg ? at::empty({d.B, d.CO, d.HW}, int_opts) : at::empty({0}, int_opts);
  if (y.numel() == 0) return {y, argmax};
  const Shape sh = make_shape(d);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "certcore_norm_dist_forward_cuda",
                             [&] { launch_forward<scalar_t>(x, w, y, argmax, p, want_arg, sh, stream); });
  return {y, argmax};
}

}  // namespace
}  // namespace certcore::cuda

TORCH_LIBRARY_IMPL(certcore, CUDA, m) { m.impl("norm_dist_forward", &certcore::cuda::norm_dist_forward_cuda); }
