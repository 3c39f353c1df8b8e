// CPU kernels of certcore::bound_inf_dist_forward / bound_inf_dist_backward (schemas in ../certcore.cpp).
//
// Exact interval bounds of y = max_i |x_i - w_i| over lower <= x <= upper (per group, as norm_dist):
//   y_upper = max_i max(u_i - w_i, w_i - l_i)          arg_upper: i (from u_i - w_i, preferred on a tie)
//                                                                 or ~i (from w_i - l_i)
//   y_lower = max(0, max_i max(l_i - w_i, w_i - u_i))  arg_lower: i (from l_i - w_i) or ~i (from
//                                                                 w_i - u_i); INT32_MIN when clamped at 0
// Ties between indices go to the first one. No EPS floor: the bounds are the values norm_dist takes
// at the corners of the box (floating-point subtraction is monotone, so they are exact in floats too).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#include "dist_kernels.h"
#include "packing.h"

namespace certcore::cpu {
namespace {

using at::Tensor;

void check_bound_inputs(const Tensor& l, const Tensor& u, const Tensor& w, int64_t groups) {
  const char* op = "bound_inf_dist_forward";
  TORCH_CHECK(l.dim() == 3, op, ": lower must be 3-D (B, CI, HW), got shape ", l.sizes());
  TORCH_CHECK(u.sizes() == l.sizes(), op, ": upper must have the shape of lower ", l.sizes(), ", got ", u.sizes());
  TORCH_CHECK(w.dim() == 2, op, ": w must be 2-D (CO, CI/groups), got shape ", w.sizes());
  TORCH_CHECK(l.scalar_type() == at::kFloat || l.scalar_type() == at::kDouble, op,
              ": lower must be float32 or float64, got ", l.scalar_type());
  TORCH_CHECK(u.scalar_type() == l.scalar_type() && w.scalar_type() == l.scalar_type(), op,
              ": lower, upper and w must share one dtype, got ", l.scalar_type(), ", ", u.scalar_type(), ", ",
              w.scalar_type());
  TORCH_CHECK(l.device().is_cpu() && u.device().is_cpu() && w.device().is_cpu(), op, ": all inputs must be CPU tensors");
  TORCH_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
  TORCH_CHECK(l.size(1) >= 1 && l.size(1) % groups == 0, op, ": CI = ", l.size(1),
              " must be positive and divisible by groups = ", groups);
  TORCH_CHECK(w.size(0) % groups == 0, op, ": CO = ", w.size(0), " is not divisible by groups = ", groups);
  TORCH_CHECK(w.size(1) == l.size(1) / groups, op, ": w.shape[1] must be CI/groups = ", l.size(1) / groups, ", got ",
              w.size(1));
}

template <typename T>
void bound_forward_impl(const Tensor& l, const Tensor& u, const Tensor& w, int64_t groups, Tensor& yl, Tensor& yu,
                        Tensor& al, Tensor& au) {
  const KernelTable& kt = kernels();
  const Dims d = Dims::make(l.size(0), l.size(1), l.size(2), w.size(0), groups, kt.lanes<T>());
  PackBuffer<T> lp(d.G * d.Mp * d.Kp), up(d.G * d.Mp * d.Kp), wp(d.G * d.Np * d.Kp);
  PackBuffer<uint8_t> wbad(d.G * d.Np);
  pack_rows(l.const_data_ptr<T>(), d, lp.data(), nullptr);
  pack_rows(u.const_data_ptr<T>(), d, up.data(), nullptr);
  pack_weight(w.const_data_ptr<T>(), d, wp.data(), wbad.data());
  for (uint8_t b : wbad) TORCH_CHECK(!b, "bound_inf_dist_forward: w must be finite (it holds NaN or infinity)");
  {
    std::atomic<bool> bad{false};
    const int64_t n = lp.size();
    at::parallel_for(0, n, 1 << 14, [&](int64_t b, int64_t e) {
      bool local = false;
      for (int64_t i = b; i < e; ++i) local |= !(lp.data()[i] <= up.data()[i]);
      if (local) bad = true;
    });
    TORCH_CHECK(!bad.load(), "bound_inf_dist_forward: lower must be <= upper elementwise and neither may be NaN");
  }
  int64_t base_ld = 0;
  std::vector<T> lt, ut;
  int64_t o_gstride = 0;
  const T* lo = original_rows(l.const_data_ptr<T>(), d, lt, o_gstride, base_ld);
  const T* uo = original_rows(u.const_data_ptr<T>(), d, ut, o_gstride, base_ld);
  BoundArgs<T> base{};
  base.ldxo = base_ld;
  base.ldwo = d.K;
  base.K = d.K;
  base.Kp = d.Kp;
  base.M = d.M;
  base.N = d.N;
  base.HW = d.HW;
  base.y_bstride = d.CO * d.HW;
  const auto fn = kt.bound<T>();
  parallel_tiles<T>(d, [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws) {
    BoundArgs<T> a = base;
    a.l = lp.data() + g * d.Mp * d.Kp;
    a.u = up.data() + g * d.Mp * d.Kp;
    a.w = wp.data() + g * d.Np * d.Kp;
    a.lo = lo + g * o_gstride;
    a.uo = uo + g * o_gstride;
    a.wo = w.const_data_ptr<T>() + g * d.N * d.K;
    const int64_t off = g * d.N * d.HW;
    a.yl = yl.data_ptr<T>() + off;
    a.yu = yu.data_ptr<T>() + off;
    a.al = al.data_ptr<int32_t>() + off;
    a.au = au.data_ptr<int32_t>() + off;
    fn(a, m0, m1, n0, n1, ws);
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bound_inf_dist_forward_cpu(const Tensor& lower, const Tensor& upper,
                                                                      const Tensor& w_, int64_t groups) {
  check_bound_inputs(lower, upper, w_, groups);
  const Tensor l = lower.contiguous(), u = upper.contiguous(), w = w_.contiguous();
  const int64_t B = l.size(0), HW = l.size(2), CO = w.size(0);
  Tensor yl = at::empty({B, CO, HW}, l.options()), yu = at::empty({B, CO, HW}, l.options());
  Tensor al = at::empty({B, CO, HW}, l.options().dtype(at::kInt)), au = at::empty({B, CO, HW}, l.options().dtype(at::kInt));
  if (yl.numel() == 0) return {yl, yu, al, au};
  AT_DISPATCH_FLOATING_TYPES(l.scalar_type(), "bound_inf_dist_forward_cpu",
                             [&] { bound_forward_impl<scalar_t>(l, u, w, groups, yl, yu, al, au); });
  return {yl, yu, al, au};
}

// Scatter of the two output gradients to the argmax positions:
//   y_upper, arg i:  d/du_i = +g, d/dw_i = -g      arg ~i: d/dl_i = -g, d/dw_i = +g
//   y_lower, arg i:  d/dl_i = +g, d/dw_i = -g      arg ~i: d/du_i = -g, d/dw_i = +g    kNoArg: none
template <typename T>
void bound_backward_impl(const Tensor& gl, const Tensor& gu, const Tensor& al, const Tensor& au, int64_t B, int64_t CI,
                         int64_t HW, int64_t CO, int64_t groups, Tensor* glo, Tensor* gup, Tensor* gw) {
  const int64_t K = CI / groups, N = CO / groups;
  const T* gL = gl.const_data_ptr<T>();
  const T* gU = gu.const_data_ptr<T>();
  const int32_t* aL = al.const_data_ptr<int32_t>();
  const int32_t* aU = au.const_data_ptr<int32_t>();
  // k of a code naming an index k < K; -1 for kNoArg or an index outside [0, K) (then ok = false)
  auto index_of = [K](int32_t code, bool& ok) -> int64_t {
    if (code == kNoArg) return -1;
    const int64_t k = arg_index(code);
    if (k < K) return k;
    ok = false;
    return -1;
  };
  bool ok = true;
  if (glo || gup) {
    T* pl = glo ? glo->data_ptr<T>() : nullptr;
    T* pu = gup ? gup->data_ptr<T>() : nullptr;
    // code k: plus[k] += g, code ~k: minus[k] -= g (either side may be absent)
    auto route = [](int32_t code, int64_t at, T g, T* plus, T* minus) {
      T* side = code >= 0 ? plus : minus;
      if (side) side[at] += arg_signed(code, g);
    };
    ok &= for_each_output_row_by_batch(B, CO, [&](int64_t b, int64_t o) {
      const int64_t base_in = (b * CI + (o / N) * K) * HW;
      bool row_ok = true;
      for (int64_t s = 0; s < HW; ++s) {
        const int64_t idx = (b * CO + o) * HW + s;
        const int64_t ku = index_of(aU[idx], row_ok), kl = index_of(aL[idx], row_ok);
        if (ku >= 0) route(aU[idx], base_in + ku * HW + s, gU[idx], pu, pl);
        if (kl >= 0) route(aL[idx], base_in + kl * HW + s, gL[idx], pl, pu);
      }
      return row_ok;
    });
  }
  if (gw) {
    T* pw = gw->data_ptr<T>();
    ok &= for_each_output_row_by_channel(B, CO, [&](int64_t b, int64_t o) {
      bool row_ok = true;
      for (int64_t s = 0; s < HW; ++s) {
        const int64_t idx = (b * CO + o) * HW + s;
        const int64_t ku = index_of(aU[idx], row_ok), kl = index_of(aL[idx], row_ok);
        if (ku >= 0) pw[o * K + ku] -= arg_signed(aU[idx], gU[idx]);
        if (kl >= 0) pw[o * K + kl] -= arg_signed(aL[idx], gL[idx]);
      }
      return row_ok;
    });
  }
  TORCH_CHECK(ok, "bound_inf_dist_backward: arg_lower/arg_upper hold an index outside [0, CI/groups)");
}

std::tuple<Tensor, Tensor, Tensor> bound_inf_dist_backward_cpu(const Tensor& grad_yl, const Tensor& grad_yu,
                                                               const Tensor& arg_lower, const Tensor& arg_upper,
                                                               const Tensor& w, int64_t CI, int64_t groups,
                                                               std::array<bool, 3> output_mask) {
  const char* op = "bound_inf_dist_backward";
  TORCH_CHECK(grad_yu.dim() == 3, op, ": grad_y_upper must be 3-D (B, CO, HW), got ", grad_yu.sizes());
  TORCH_CHECK(grad_yl.sizes() == grad_yu.sizes() && arg_lower.sizes() == grad_yu.sizes() &&
                  arg_upper.sizes() == grad_yu.sizes(),
              op, ": grad_y_lower, grad_y_upper, arg_lower and arg_upper must share one shape");
  TORCH_CHECK(arg_lower.scalar_type() == at::kInt && arg_upper.scalar_type() == at::kInt, op,
              ": arg_lower and arg_upper must be int32");
  TORCH_CHECK(w.dim() == 2 && w.size(0) == grad_yu.size(1), op, ": w must be (CO, CI/groups) with CO = ",
              grad_yu.size(1), ", got ", w.sizes());
  TORCH_CHECK(groups >= 1 && CI % groups == 0 && w.size(0) % groups == 0 && w.size(1) == CI / groups, op,
              ": CI = ", CI, ", groups = ", groups, " and w.shape = ", w.sizes(), " do not match");
  TORCH_CHECK(grad_yl.scalar_type() == w.scalar_type() && grad_yu.scalar_type() == w.scalar_type(), op,
              ": the gradients must have the dtype of w");
  const int64_t B = grad_yu.size(0), CO = grad_yu.size(1), HW = grad_yu.size(2);
  const auto opts = w.options();
  Tensor glo = output_mask[0] ? at::zeros({B, CI, HW}, opts) : at::empty({0}, opts);
  Tensor gup = output_mask[1] ? at::zeros({B, CI, HW}, opts) : at::empty({0}, opts);
  Tensor gw = output_mask[2] ? at::zeros_like(w, at::MemoryFormat::Contiguous) : at::empty({0}, opts);
  if (grad_yu.numel() == 0 || !(output_mask[0] || output_mask[1] || output_mask[2])) return {glo, gup, gw};
  const Tensor gl = grad_yl.contiguous(), gu = grad_yu.contiguous(), al = arg_lower.contiguous(),
               au = arg_upper.contiguous();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "bound_inf_dist_backward_cpu", [&] {
    bound_backward_impl<scalar_t>(gl, gu, al, au, B, CI, HW, CO, groups, output_mask[0] ? &glo : nullptr,
                                  output_mask[1] ? &gup : nullptr, output_mask[2] ? &gw : nullptr);
  });
  return {glo, gup, gw};
}

}  // namespace
}  // namespace certcore::cpu

TORCH_LIBRARY_IMPL(certcore, CPU, m) {
  m.impl("bound_inf_dist_forward", &certcore::cpu::bound_inf_dist_forward_cpu);
  m.impl("bound_inf_dist_backward", &certcore::cpu::bound_inf_dist_backward_cpu);
}
