// CUDA kernels of certcore::norm_dist_backward (the math and the algorithms are described at the
// top of norm_dist.cu).
#include "norm_dist.cuh"

#include <torch/library.h>

#include <array>
#include <tuple>

namespace certcore::cuda {
namespace {

using namespace norm_dist_detail;

// ---------------------------------------------------------------------------------------------
// Backward kernels (finite p).
// ---------------------------------------------------------------------------------------------

// sign(u) |u|^Q for an integer Q = p - 1 in 0..7, by multiplication: odd Q: u^Q; even Q >= 2:
// u^(Q-1) |u|; Q = 0: sign(u) (0 at u = 0).
template <typename T, int Q>
struct IntSgnPow {
  static constexpr int kUnroll = kBK;  // unroll factor of the reduction loops using it
  __device__ __forceinline__ T operator()(T u) const {
    if constexpr (Q == 0) {
      return T(u > T(0)) - T(u < T(0));
    } else if constexpr (Q % 2 == 1) {
      return pown<Q>(u);
    } else {
      return pown<Q - 1>(u) * fabs(u);
    }
  }
};

// sign(u) |u|^q for a real q = p - 1 (q < 0 when p < 1); 0 at u = 0.
template <typename T>
struct GeneralSgnPow {
  static constexpr int kUnroll = 2;  // exp2/log2 are long: full unrolling spills
  T q;
  __device__ __forceinline__ T operator()(T u) const {
    const T a = fabs(u);
    if (a == T(0)) return T(0);
    const T v = dev_exp2(q * dev_log2(a));
    return u < T(0) ? -v : v;
  }
};

// 1/y, and 0 where y == 0 (such outputs pass no gradient).
template <typename T>
struct SafeReciprocal {
  __device__ __forceinline__ T operator()(T v) const { return v != T(0) ? T(1) / v : T(0); }
};

// One staged chunk of the reduction of both kernels: acc[m][j] += g_m * f((x - w) * r_m) over the kBK
// indices k, with g_m = gs[k][tm.row + 16m] and r_m = rs[k][tm.row + 16m]. Of x and w, one is the
// thread's register tile fixed[m][j] and the other is read from vs[k][tm.col + 16j]: x is fixed for
// grad_x (kFixedIsX), w for grad_w.
template <bool kFixedIsX, typename T, class SgnPow>
__device__ __forceinline__ void accumulate_chunk(T (&acc)[kReg][kReg], const T (&fixed)[kReg][kReg],
                                                 const SmemTile<T>& gs, const SmemTile<T>& rs, const SmemTile<T>& vs,
                                                 const ThreadMap& tm, const SgnPow& f) {
#pragma unroll SgnPow::kUnroll
  for (int k = 0; k < kBK; ++k) {
    T gm[kReg], rm[kReg], vj[kReg];
#pragma unroll
    for (int m = 0; m < kReg; ++m) {
      gm[m] = gs[k][tm.row + 16 * m];
      rm[m] = rs[k][tm.row + 16 * m];
    }
    load_frag(vj, vs[k], tm.col);
#pragma unroll
    for (int m = 0; m < kReg; ++m)
#pragma unroll
      for (int j = 0; j < kReg; ++j) {
        const T t = kFixedIsX ? fixed[m][j] - vj[j] : vj[j] - fixed[m][j];  // x - w
        acc[m][j] += gm[m] * f(t * rm[m]);
      }
  }
}

// grad_x. Output plane: rows n (n0 + 0..63), columns i (i0 + 0..63 of group g); blockIdx.x =
// n_tile + t0 * (i_tile + t1 * g). Reduction over o in chunks of 16:
//   gs[k][c] = gy[n0 + c, g*CO_g + k0 + k],  rs[k][c] = 1/y[same],  ws[k][c] = w[g*CO_g + k0 + k, i0 + c].
// The thread's x values x[n, g*CI_g + i] are fixed over the reduction and live in registers.
template <typename T, class SgnPow>
__global__ void __launch_bounds__(kThreads) norm_dist_bwd_input_kernel(const T* __restrict__ gy,
                                                                        const T* __restrict__ x,
                                                                        const T* __restrict__ w,
                                                                        const T* __restrict__ y,
                                                                        T* __restrict__ gx, Shape sh, SgnPow f) {
  __shared__ SmemTile<T> gs, rs, ws;
  int64_t nt, it, g;
  split3(blockIdx.x, sh.t0, sh.t1, nt, it, g);
  const int64_t n0 = nt * kTile;
  const int i0 = static_cast<int>(it) * kTile;
  const int icols = min(kTile, sh.CI_g - i0);
  const ChannelRowsLoader<T> gl(gy, sh.N, sh.HW, sh.CO, g * sh.CO_g, sh.CO_g, n0);
  const ChannelRowsLoader<T> yl(y, sh.N, sh.HW, sh.CO, g * sh.CO_g, sh.CO_g, n0);
  const ThreadMap tm(sh.HW > 1);

  // Offsets of x[n, g*CI_g] (same layout as grad_x), -1 outside the problem.
  int64_t xb[kReg];
  T xr[kReg][kReg], acc[kReg][kReg];
#pragma unroll
  for (int m = 0; m < kReg; ++m) {
    const int64_t n = n0 + tm.row + 16 * m;
    xb[m] = n < sh.N ? row_base(n, sh.HW, sh.CI) + (g * sh.CI_g) * sh.HW : -1;
#pragma unroll
    for (int j = 0; j < kReg; ++j) {
      const int i = i0 + tm.col + 16 * j;
      xr[m][j] = (xb[m] >= 0 && i < sh.CI_g) ? x[xb[m] + static_cast<int64_t>(i) * sh.HW] : T(0);
    }
  }
  fill_regs(acc, T(0));

  for (int k0 = 0; k0 < sh.CO_g; k0 += kBK) {
    gl.load(gs, k0);
    yl.load(rs, k0, SafeReciprocal<T>{});
    load_w_along_rows(ws, w, static_cast<int64_t>(g) * sh.CO_g, sh.CO_g, k0, i0, icols, sh.CI_g);
    __syncthreads();
    accumulate_chunk<true>(acc, xr, gs, rs, ws, tm, f);
    __syncthreads();
  }

#pragma unroll
  for (int m = 0; m < kReg; ++m) {
    if (xb[m] < 0) continue;
#pragma unroll
    for (int j = 0; j < kReg; ++j) {
      const int i = i0 + tm.col + 16 * j;
      if (i < sh.CI_g) gx[xb[m] + static_cast<int64_t>(i) * sh.HW] = acc[m][j];
    }
  }
}

// grad_w, one slice of n. Output plane: rows o (o0 + 0..63 of group g), columns i (i0 + 0..63);
// blockIdx.x = i_tile + t0 * (o_tile + t1 * (g + G * slice)). Reduction over n in
// [slice*chunk, min(N, (slice+1)*chunk)) in chunks of 16:
//   xs[k][c] = x[nk + k, g*CI_g + i0 + c],  gs[k][c] = gy[nk + k, g*CO_g + o0 + c],  rs = 1/y[same].
// Writes out[slice, g*CO_g + o, i] = -sum (out is grad_w itself when there is one slice, else an
// (S, CO, CI_g) workspace summed by sum_slices_kernel).
template <typename T, class SgnPow>
__global__ void __launch_bounds__(kThreads) norm_dist_bwd_weight_kernel(const T* __restrict__ gy,
                                                                         const T* __restrict__ x,
                                                                         const T* __restrict__ w,
                                                                         const T* __restrict__ y,
                                                                         T* __restrict__ out, Shape sh, SgnPow f) {
  __shared__ SmemTile<T> xs, gs, rs;
  int64_t it, ot, rest;
  split3(blockIdx.x, sh.t0, sh.t1, it, ot, rest);
  const int64_t g = rest % sh.G, slice = rest / sh.G;
  const int i0 = static_cast<int>(it) * kTile, o0 = static_cast<int>(ot) * kTile;
  const int icols = min(kTile, sh.CI_g - i0), ocols = min(kTile, sh.CO_g - o0);
  const int64_t n_begin = slice * sh.chunk;
  const int64_t n_end = sh.N < n_begin + sh.chunk ? sh.N : n_begin + sh.chunk;
  const ThreadMap tm(false);  // row = o, col = i (fast): stores along i are contiguous

  T wr[kReg][kReg], acc[kReg][kReg];
#pragma unroll
  for (int m = 0; m < kReg; ++m)
#pragma unroll
    for (int j = 0; j < kReg; ++j) {
      const int o = o0 + tm.row + 16 * m, i = i0 + tm.col + 16 * j;
      wr[m][j] = (o < sh.CO_g && i < sh.CI_g) ? w[(g * sh.CO_g + o) * sh.CI_g + i] : T(0);
    }
  fill_regs(acc, T(0));

  // (b, s) of this thread's row n = nk + t % 16 in the HW > 1 loaders.
  NCursor cur(n_begin + static_cast<int>(threadIdx.x) % kBK, sh.HW);
  for (int64_t nk = n_begin; nk < n_end; nk += kBK) {
    load_n_rows(xs, x, sh.HW, sh.CI, g * sh.CI_g + i0, icols, nk, n_end, cur, Identity<T>{});
    load_n_rows(gs, gy, sh.HW, sh.CO, g * sh.CO_g + o0, ocols, nk, n_end, cur, Identity<T>{});
    load_n_rows(rs, y, sh.HW, sh.CO, g * sh.CO_g + o0, ocols, nk, n_end, cur, SafeReciprocal<T>{});
    __syncthreads();
    accumulate_chunk<false>(acc, wr, gs, rs, xs, tm, f);
    __syncthreads();
    if (sh.HW > 1) cur.advance(sh.HW);
  }

  T* dst = out + slice * sh.CO * sh.CI_g;
#pragma unroll
  for (int m = 0; m < kReg; ++m)
#pragma unroll
    for (int j = 0; j < kReg; ++j) {
      const int o = o0 + tm.row + 16 * m, i = i0 + tm.col + 16 * j;
      if (o < sh.CO_g && i < sh.CI_g) dst[(g * sh.CO_g + o) * sh.CI_g + i] = T(0) - acc[m][j];
    }
}

// ---------------------------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------------------------

template <typename T, class SgnPow>
void launch_backward_finite(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& y,
                            at::Tensor* grad_x, at::Tensor* grad_w, Shape sh, SgnPow f, cudaStream_t stream) {
  if (grad_x != nullptr && sh.N > 0 && sh.CI_g > 0) {
    Shape s = sh;
    s.t0 = ceil_div(sh.N, kTile);
    s.t1 = ceil_div(sh.CI_g, kTile);
    norm_dist_bwd_input_kernel<T, SgnPow><<<grid_of(s.t0 * s.t1 * s.G), kThreads, 0, stream>>>(
        gy.data_ptr<T>(), x.data_ptr<T>(), w.data_ptr<T>(), y.data_ptr<T>(), grad_x->data_ptr<T>(), s, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (grad_w != nullptr && sh.CO_g > 0 && sh.CI_g > 0) {
    Shape s = sh;
    s.t0 = ceil_div(sh.CI_g, kTile);
    s.t1 = ceil_div(sh.CO_g, kTile);
    const int64_t tiles = s.t0 * s.t1 * s.G;
    const int64_t E = sh.CO * sh.CI_g;
    // Split the reduction over n so that about 4 blocks per SM are busy; at least 128 n per slice.
    const int64_t want_blocks = int64_t{4} * sm_count(x.device().index());
    const Split sp = choose_split(sh.N, ceil_div(want_blocks, tiles), 8 * kBK, E);
    s.chunk = sp.chunk;
    at::Tensor ws;
    T* out = grad_w->data_ptr<T>();
    if (sp.S > 1) {
      ws = at::empty({sp.S, sh.CO, sh.CI_g}, x.options());
      out = ws.data_ptr<T>();
    }
    norm_dist_bwd_weight_kernel<T, SgnPow><<<grid_of(tiles * sp.S), kThreads, 0, stream>>>(
        gy.data_ptr<T>(), x.data_ptr<T>(), w.data_ptr<T>(), y.data_ptr<T>(), out, s, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (sp.S > 1) launch_sum_slices<T>(out, sp.S, E, grad_w->data_ptr<T>(), stream);
  }
}

std::tuple<at::Tensor, at::Tensor> norm_dist_backward_cuda(const at::Tensor& grad_y_in, const at::Tensor& x,
                                                           const at::Tensor& w, const at::Tensor& y,
                                                           const at::Tensor& argmax, double p, int64_t groups,
                                                           std::array<bool, 2> output_mask) {
  const Dims d = check_norm_dist_inputs(x, w, p, groups);
  const c10::cuda::CUDAGuard guard(x.device());
  const c10::Device dev = x.device();
  const at::ScalarType dt = x.scalar_type();
  at::Tensor grad_x = at::empty({0}, x.options());
  at::Tensor grad_w = at::empty({0}, w.options());
  if (!output_mask[0] && !output_mask[1]) return {grad_x, grad_w};
  if (d.B * d.HW == 0 || d.CO == 0) {
    // No outputs: nothing flows back (argmax / y are not even looked at).
    return {output_mask[0] ? at::zeros({d.B, d.CI, d.HW}, x.options()) : grad_x,
            output_mask[1] ? at::zeros({d.CO, d.CI_g}, w.options()) : grad_w};
  }

  // Incoming gradients are often expanded or otherwise strided: accept any layout.
  TORCH_CHECK(grad_y_in.defined(), "certcore.norm_dist backward: grad_y is undefined");
  const at::Tensor gy = grad_y_in.contiguous();
  check_float_tensor(gy, "grad_y", dev, 3, dt);
  const std::array<int64_t, 3> out_shape{d.B, d.CO, d.HW};
  TORCH_CHECK(gy.sizes() == at::IntArrayRef(out_shape), "certcore.norm_dist backward: grad_y must have shape ",
              at::IntArrayRef(out_shape), ", got ", gy.sizes());
  const Shape sh = make_shape(d);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev.index()).stream();

  if (std::isinf(p)) {
    // The gradient flows through the argmax index only (zero-initialised scatter targets).
    check_int32_tensor(argmax, "argmax", dev);
    TORCH_CHECK(argmax.sizes() == at::IntArrayRef(out_shape), "certcore.norm_dist backward: argmax must have shape ",
                at::IntArrayRef(out_shape), ", got ", argmax.sizes());
    if (output_mask[0]) grad_x = at::zeros({d.B, d.CI, d.HW}, x.options());
    if (output_mask[1]) grad_w = at::empty({d.CO, d.CI_g}, w.options());
    AT_DISPATCH_FLOATING_TYPES(dt, "certcore_norm_dist_backward_inf_cuda", [&] {
      ArgStream<scalar_t> s;
      s.arg = argmax.data_ptr<int32_t>();
      s.grad = gy.data_ptr<scalar_t>();
      s.pos = s.neg = output_mask[0] ? grad_x.data_ptr<scalar_t>() : nullptr;
      const ArgShape ash{sh.N, sh.HW, sh.CI, sh.CO, sh.CI_g, sh.CO_g, sh.G};
      launch_argmax_scatter<scalar_t>(s, ArgStream<scalar_t>{}, 1, ash, output_mask[0],
                                      output_mask[1] ? grad_w.data_ptr<scalar_t>() : nullptr, x.options(), stream);
    });
    return {grad_x, grad_w};
  }

  check_float_tensor(y, "y", dev, 3, dt);
  TORCH_CHECK(y.sizes() == at::IntArrayRef(out_shape), "certcore.norm_dist backward: y must have shape ",
              at::IntArrayRef(out_shape), ", got ", y.sizes());
  // Every element of grad_x / grad_w is written by the kernels (0 for empty reductions).
  if (output_mask[0]) grad_x = at::empty({d.B, d.CI, d.HW}, x.options());
  if (output_mask[1]) grad_w = at::empty({d.CO, d.CI_g}, w.options());
  if (output_mask[1] && (d.CO_g == 0 || d.CI_g == 0)) grad_w.zero_();
  at::Tensor* gx = output_mask[0] ? &grad_x : nullptr;
  at::Tensor* gw = output_mask[1] ? &grad_w : nullptr;
  AT_DISPATCH_FLOATING_TYPES(dt, "certcore_norm_dist_backward_cuda", [&] {
    using T = scalar_t;
    if (const int P = small_int_p(p); P != 0) {
      dispatch_int_p(P, [&](auto pc) {
        launch_backward_finite<T>(gy, x, w, y, gx, gw, sh, IntSgnPow<T, decltype(pc)::value - 1>{}, stream);
      });
    } else {
      launch_backward_finite<T>(gy, x, w, y, gx, gw, sh, GeneralSgnPow<T>{static_cast<T>(p - 1.0)}, stream);
    }
  });
  return {grad_x, grad_w};
}

}  // namespace
}  // namespace certcore::cuda

TORCH_LIBRARY_IMPL(certcore, CUDA, m) { m.impl("norm_dist_backward", &certcore::cuda::norm_dist_backward_cuda); }
