// CUDA kernels of certcore::bound_inf_dist_forward and certcore::bound_inf_dist_backward: exact
// interval bounds of y = max_i |x_i - w_i| over lower <= x <= upper (l, u below), per output o of
// group g and position n = b*HW + s, with i over the group's CI_g input channels:
//
//   y_U = max_i max(u_i - w_i, w_i - l_i)              arg_upper: i  if u_i - w_i >= w_i - l_i, else ~i
//   y_L = max(0, max_i max(l_i - w_i, w_i - u_i))      arg_lower: i  if l_i - w_i >= w_i - u_i, else ~i;
//                                                      INT32_MIN when the max is <= 0 (y_L = 0, no gradient)
//
// Ties between indices keep the FIRST index (strict '>' in an ascending scan). The forward kernel
// has the tiling of norm_dist's forward (FwdTile, common.cuh); the backward routes each output's
// gradient to the (input, weight) pair its code names, with the sign of the difference:
//   y_U from u_i - w_i: d/du_i = +1, d/dw_i = -1;   from w_i - l_i: d/dl_i = -1, d/dw_i = +1
//   y_L from l_i - w_i: d/dl_i = +1, d/dw_i = -1;   from w_i - u_i: d/du_i = -1, d/dw_i = +1
// through the deterministic argmax scatter of common.cuh (no atomics).
#include "common.cuh"

#include <ATen/ops/full.h>
#include <torch/library.h>

#include <array>
#include <tuple>

namespace certcore::cuda {
namespace {

struct BoundShape {
  int64_t N, HW, CI, CO;
  int CI_g, CO_g, G;
  int64_t t0, t1;  // n tiles, o tiles
};

// One step of an ascending first-index scan of max(hi - w, w - lo): the candidate replaces (best, code)
// only when strictly larger; code is i for the "hi - w" side (which also wins a tie between the two
// sides), ~i for "w - lo". y_U scans with (hi, lo) = (u, l), y_L with (hi, lo) = (l, u).
template <typename T>
__device__ __forceinline__ void bound_scan_step(T hi, T lo, T w, int32_t i, T& best, int32_t& code) {
  const T pos = hi - w, neg = w - lo;
  const bool is_pos = pos >= neg;
  const T cand = is_pos ? pos : neg;
  if (cand > best) {
    best = cand;
    code = is_pos ? i : ~i;
  }
}

// Output plane: rows n (n0 + 0..63), columns o (o0 + 0..63 of group g), laid out by FwdTile
// (common.cuh). Shared tiles per chunk of 16 input channels: ls, us (lower, upper at
// [n0 + c, g*CI_g + k0 + k]) and ws (w[g*CO_g + o0 + c, k0 + k]). Padded indices have
// l = u = w = 0: both candidates are 0, which never beats the running maxima (they start at 0 and
// only a strictly larger value replaces them).
//
// Starting y_U at (0, code 0) equals starting the scan at i = 0 whenever its candidate is 0: with
// l_0 <= u_0, max(u_0 - w_0, w_0 - l_0) = 0 forces both differences to be 0, a tie that picks the
// "u - w" side, i.e. code 0.
template <typename T>
__global__ void __launch_bounds__(kThreads) bound_inf_dist_fwd_kernel(const T* __restrict__ lo,
                                                                       const T* __restrict__ up,
                                                                       const T* __restrict__ w,
                                                                       T* __restrict__ y_lo, T* __restrict__ y_up,
                                                                       int32_t* __restrict__ a_lo,
                                                                       int32_t* __restrict__ a_up, BoundShape sh) {
  __shared__ SmemTile<T> ls, us, ws;
  const FwdTile tile(sh);
  const ChannelRowsLoader<T> ll(lo, sh.N, sh.HW, sh.CI, tile.g * sh.CI_g, sh.CI_g, tile.n0);
  const ChannelRowsLoader<T> ul(up, sh.N, sh.HW, sh.CI, tile.g * sh.CI_g, sh.CI_g, tile.n0);
  const ThreadMap tm(sh.HW > 1);

  T mu[kReg][kReg], ml[kReg][kReg];
  int32_t cu[kReg][kReg], cl[kReg][kReg];
  fill_regs(mu, T(0));
  fill_regs(ml, T(0));
  fill_regs(cu, 0);
  fill_regs(cl, INT32_MIN);

  for (int k0 = 0; k0 < sh.CI_g; k0 += kBK) {
    ll.load(ls, k0);
    ul.load(us, k0);
    tile.load_w(ws, w, sh, k0);
    __syncthreads();
#pragma unroll 4
    for (int k = 0; k < kBK; ++k) {
      const int32_t i = k0 + k;
      T l[kReg], u[kReg], b[kReg];
      load_frag(l, ls[k], tm.row);
      load_frag(u, us[k], tm.row);
      load_frag(b, ws[k], tm.col);
#pragma unroll
      for (int m = 0; m < kReg; ++m)
#pragma unroll
        for (int j = 0; j < kReg; ++j) {
          bound_scan_step(u[m], l[m], b[j], i, mu[m][j], cu[m][j]);  // upper: max(u - w, w - l)
          bound_scan_step(l[m], u[m], b[j], i, ml[m][j], cl[m][j]);  // lower: max(l - w, w - u)
        }
    }
    __syncthreads();
  }

  tile.for_each_output(sh, tm, [&](int m, int j, int64_t off) {
    y_lo[off] = ml[m][j];
    y_up[off] = mu[m][j];
    a_lo[off] = cl[m][j];
    a_up[off] = cu[m][j];
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bound_inf_dist_forward_cuda(const at::Tensor& lower,
                                                                                       const at::Tensor& upper,
                                                                                       const at::Tensor& w,
                                                                                       int64_t groups) {
  const at::ScalarType dt = check_leading_float_tensor(lower, "certcore.bound_inf_dist (CUDA)", "lower", 3);
  const c10::Device dev = lower.device();
  check_float_tensor(upper, "upper", dev, 3, dt);
  check_float_tensor(w, "w", dev, 2, dt);
  TORCH_CHECK(upper.sizes() == lower.sizes(), "certcore.bound_inf_dist: lower and upper shapes differ: ",
              lower.sizes(), " vs ", upper.sizes());
  TORCH_CHECK(groups >= 1, "certcore.bound_inf_dist: groups must be >= 1, got ", groups);
  const int64_t B = lower.size(0), CI = lower.size(1), HW = lower.size(2), CO = w.size(0);
  TORCH_CHECK(CI % groups == 0 && CO % groups == 0, "certcore.bound_inf_dist: groups = ", groups,
              " must divide CI = ", CI, " and CO = ", CO);
  const int64_t CI_g = CI / groups, CO_g = CO / groups;
  TORCH_CHECK(w.size(1) == CI_g, "certcore.bound_inf_dist: w must have shape (CO, CI/groups) = (", CO, ", ", CI_g,
              "), got ", w.sizes());
  check_fits_int(CI_g, "CI/groups");
  check_fits_int(CO_g, "CO/groups");
  check_fits_int(groups, "groups");

  const c10::cuda::CUDAGuard guard(dev);
  const auto int_opts = lower.options().dtype(at::kInt);
  if (CI_g == 0) {
    // Empty maximum: both bounds 0, no index.
    return {at::zeros({B, CO, HW}, lower.options()), at::zeros({B, CO, HW}, lower.options()),
            at::full({B, CO, HW}, INT32_MIN, int_opts), at::full({B, CO, HW}, INT32_MIN, int_opts)};
  }
  at::Tensor y_lo = at::empty({B, CO, HW}, lower.options());
  at::Tensor y_up = at::empty({B, CO, HW}, lower.options());
  at::Tensor a_lo = at::empty({B, CO, HW}, int_opts);
  at::Tensor a_up = at::empty({B, CO, HW}, int_opts);
  if (y_lo.numel() == 0) return {y_lo, y_up, a_lo, a_up};

  BoundShape sh{B * HW, HW, CI, CO, static_cast<int>(CI_g), static_cast<int>(CO_g), static_cast<int>(groups), 0, 0};
  sh.t0 = ceil_div(sh.N, kTile);
  sh.t1 = ceil_div(CO_g, kTile);
  const unsigned grid = grid_of(sh.t0 * sh.t1 * sh.G);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev.index()).stream();
  AT_DISPATCH_FLOATING_TYPES(dt, "certcore_bound_inf_dist_forward_cuda", [&] {
    bound_inf_dist_fwd_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        lower.data_ptr<scalar_t>(), upper.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), y_lo.data_ptr<scalar_t>(),
        y_up.data_ptr<scalar_t>(), a_lo.data_ptr<int32_t>(), a_up.data_ptr<int32_t>(), sh);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y_lo, y_up, a_lo, a_up};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bound_inf_dist_backward_cuda(
    const at::Tensor& grad_y_lower_in, const at::Tensor& grad_y_upper_in, const at::Tensor& arg_lower,
    const at::Tensor& arg_upper, const at::Tensor& w, int64_t CI, int64_t groups, std::array<bool, 3> output_mask) {
  const at::ScalarType dt = check_leading_float_tensor(w, "certcore.bound_inf_dist backward (CUDA)", "w", 2);
  const c10::Device dev = w.device();
  check_int32_tensor(arg_upper, "arg_upper", dev);
  check_int32_tensor(arg_lower, "arg_lower", dev);
  TORCH_CHECK(groups >= 1, "certcore.bound_inf_dist backward: groups must be >= 1, got ", groups);
  const int64_t B = arg_upper.size(0), CO = arg_upper.size(1), HW = arg_upper.size(2);
  const int64_t CI_g = w.size(1);
  TORCH_CHECK(arg_lower.sizes() == arg_upper.sizes(), "certcore.bound_inf_dist backward: arg shapes differ: ",
              arg_lower.sizes(), " vs ", arg_upper.sizes());
  TORCH_CHECK(w.size(0) == CO && CO % groups == 0 && CI == CI_g * groups,
              "certcore.bound_inf_dist backward: inconsistent sizes: w ", w.sizes(), ", args ", arg_upper.sizes(),
              ", CI = ", CI, ", groups = ", groups);
  const int64_t CO_g = CO / groups;
  check_fits_int(CI_g, "CI/groups");
  check_fits_int(CO_g, "CO/groups");
  check_fits_int(groups, "groups");

  const c10::cuda::CUDAGuard guard(dev);
  const auto opts = w.options();
  const bool want_lo = output_mask[0], want_up = output_mask[1], want_w = output_mask[2];
  at::Tensor grad_lo = want_lo ? at::zeros({B, CI, HW}, opts) : at::empty({0}, opts);
  at::Tensor grad_up = want_up ? at::zeros({B, CI, HW}, opts) : at::empty({0}, opts);
  at::Tensor grad_w = want_w ? at::empty({CO, CI_g}, opts) : at::empty({0}, opts);
  if (!want_lo && !want_up && !want_w) return {grad_lo, grad_up, grad_w};

  // Incoming gradients are often expanded or otherwise strided: accept any layout.
  TORCH_CHECK(grad_y_lower_in.defined() && grad_y_upper_in.defined(),
              "certcore.bound_inf_dist backward: gradients are undefined");
  const at::Tensor g_lo = grad_y_lower_in.contiguous(), g_up = grad_y_upper_in.contiguous();
  check_float_tensor(g_lo, "grad_y_lower", dev, 3, dt);
  check_float_tensor(g_up, "grad_y_upper", dev, 3, dt);
  TORCH_CHECK(g_lo.sizes() == arg_upper.sizes() && g_up.sizes() == arg_upper.sizes(),
              "certcore.bound_inf_dist backward: gradient shapes ", g_lo.sizes(), ", ", g_up.sizes(),
              " differ from the output shape ", arg_upper.sizes());

  const ArgShape sh{B * HW, HW, CI, CO, static_cast<int>(CI_g), static_cast<int>(CO_g), static_cast<int>(groups)};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev.index()).stream();
  AT_DISPATCH_FLOATING_TYPES(dt, "certcore_bound_inf_dist_backward_cuda", [&] {
    using T = scalar_t;
    T* dl = want_lo ? grad_lo.data_ptr<T>() : nullptr;
    T* du = want_up ? grad_up.data_ptr<T>() : nullptr;
    // y_U: code i -> +g to upper (u_i - w_i); code ~i -> -g to lower (w_i - l_i).
    const ArgStream<T> s_up{.arg = arg_upper.data_ptr<int32_t>(), .grad = g_up.data_ptr<T>(), .pos = du, .neg = dl};
    // y_L: code i -> +g to lower (l_i - w_i); code ~i -> -g to upper (w_i - u_i).
    const ArgStream<T> s_lo{.arg = arg_lower.data_ptr<int32_t>(), .grad = g_lo.data_ptr<T>(), .pos = dl, .neg = du};
    launch_argmax_scatter<T>(s_up, s_lo, 2, sh, want_lo || want_up, want_w ? grad_w.data_ptr<T>() : nullptr, opts,
                             stream);
  });
  return {grad_lo, grad_up, grad_w};
}

}  // namespace
}  // namespace certcore::cuda

TORCH_LIBRARY_IMPL(certcore, CUDA, m) {
  m.impl("bound_inf_dist_forward", &certcore::cuda::bound_inf_dist_forward_cuda);
  m.impl("bound_inf_dist_backward", &certcore::cuda::bound_inf_dist_backward_cuda);
}
