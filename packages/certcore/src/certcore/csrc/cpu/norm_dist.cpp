// CPU kernels of certcore::norm_dist_forward / norm_dist_backward (schemas in ../certcore.cpp).
//
// y[b, o, s] = ||x[b, g*K:(g+1)*K, s] - w[o, :]||_p, g = o / (CO/groups). Three algorithms:
//   p = inf          max of |x - w| (one subtraction and one VRANGEPS per 16 pairs on AVX-512),
//                    plus the first index reaching it when need_argmax; without the argmax, on
//                    AVX-512 and finite inputs, on the unpacked tensors (forward_inf_direct);
//   p in {1, ..., 8} sum of |x - w|^p by repeated multiplication (a rescaled pass only for tiles
//                    where a sum over- or underflowed);
//   other p          max m first, then sum (|x - w| / m)^p: finite and accurate up to p = 1000 and
//                    beyond in float32.
// Rows or columns holding NaN or infinity take an exact scalar path (NaN in, NaN out).
// Backward, finite p: dL/dx = sum_o g sign(t) (|t|/y)^(p-1), dL/dw = -sum_{b,s} of the same, with
// the saved y; 0 where y == 0 (x == w: no NaN) and for terms with t == 0. p = inf: the gradient goes
// to the stored argmax index only.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
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

PMode classify_p(double p, int32_t& ip) {
  ip = 0;
  if (std::isinf(p)) return PMode::Inf;
  if (p >= 1 && p <= 8 && p == std::floor(p)) {
    ip = int32_t(p);
    return PMode::Int;
  }
  return PMode::General;
}

void check_inputs(const char* op, const Tensor& x, const Tensor& w, double p, int64_t groups) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D (B, CI, HW), got shape ", x.sizes());
  TORCH_CHECK(w.dim() == 2, op, ": w must be 2-D (CO, CI/groups), got shape ", w.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(w.scalar_type() == x.scalar_type(), op, ": w must have the dtype of x (", x.scalar_type(), "), got ",
              w.scalar_type());
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), op, ": x and w must be CPU tensors");
  TORCH_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
  TORCH_CHECK(x.size(1) % groups == 0, op, ": CI = ", x.size(1), " is not divisible by groups = ", groups);
  TORCH_CHECK(w.size(0) % groups == 0, op, ": CO = ", w.size(0), " is not divisible by groups = ", groups);
  TORCH_CHECK(w.size(1) == x.size(1) / groups, op, ": w.shape[1] must be CI/groups = ", x.size(1) / groups,
              ", got ", w.size(1));
  TORCH_CHECK(p > 0, op, ": p must be > 0 (and not NaN), got ", p);
  TORCH_CHECK(x.size(1) >= 1, op, ": x must have at least one input channel");
  TORCH_CHECK(x.size(1) / groups < std::numeric_limits<int32_t>::max(), op, ": CI/groups must fit an int32 argmax");
}

// p = inf without argmax where the kernels have inf_direct, if every input is finite (VRANGEPS
// passes over a NaN; returns false then, and the packed path, which handles NaN and infinities,
// takes over): vectors along the output's contiguous dimension, on operand tiles of kDirectCols
// columns stored contiguously (rows 4 KiB apart would share cache sets).
// FC: y[b, g*N + n] = max_k |x[b, g*K + k] - w[g*N + n, k]|, w's groups transposed once into tiles
// (K, kDirectCols); conv: y[b, g*N + n, s] = max_k |w[g*N + n, k] - x[b, g*K + k, s]|, each task
// copying its tile of x.
template <typename T>
bool forward_inf_direct(const Tensor& x, const Tensor& w, int64_t groups, Tensor& y, const KernelTable& kt) {
  // a finite sum proves every element finite (one vectorised pass; a sum that overflows only sends
  // a finite input to the packed path)
  auto all_finite = [](const Tensor& t) { return std::isfinite(t.sum().item<double>()); };
  if (!all_finite(x)) return false;
  const InfDirectFn<T> fn = kt.inf_direct<T>();
  const int64_t B = x.size(0), CI = x.size(1), HW = x.size(2), CO = w.size(0);
  const int64_t K = CI / groups, N = CO / groups;
  constexpr int64_t TC = kDirectCols;
  const T* xp = x.const_data_ptr<T>();
  const T* wp = w.const_data_ptr<T>();
  T* yp = y.data_ptr<T>();
  const bool fc = HW == 1;
  // one (M x NC) problem per unit: a group (FC) or a (batch element, group) pair (conv)
  const int64_t M = fc ? B : N, NC = fc ? N : HW, units = fc ? groups : B * groups;
  // conv: one row tile per task (its rows are the few weight rows), so x's tile is copied once
  const int64_t mt = fc ? ceil_div(M, kDirectRows) : 1, nt = ceil_div(NC, TC);
  PackBuffer<T> wt(fc ? groups * nt * K * TC : 0);
  if (fc) {  // wt[g][j][k][c] = w[g*N + j*TC + c][k], zero beyond N; the finiteness check on the way
    const TransposeFn<T> transpose = kt.transpose<T>();
    std::atomic<bool> finite{true};
    at::parallel_for(0, groups * nt, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t g = t / nt, n0 = (t % nt) * TC, cols = std::min(TC, N - n0);
        T* dst = wt.data() + t * K * TC;
        if (!transpose(wp + (g * N + n0) * K, K, cols, K, dst, TC)) finite = false;
        if (cols < TC)
          for (int64_t k = 0; k < K; ++k) std::fill(dst + k * TC + cols, dst + (k + 1) * TC, T(0));
      }
    });
    if (!finite.load()) return false;
  } else if (!all_finite(w)) {
    return false;
  }
  // row tiles of near-equal size (multiples of the register block), so that threads get equal work
  auto row_start = [&](int64_t i) { return std::min(M, round_up(i * M / mt, kDirectRowBlock)); };
  at::parallel_for(0, units * mt * nt, 1, [&](int64_t begin, int64_t end) {
    PackBuffer<T> tile(fc ? 0 : K * TC);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t u = t / (mt * nt), i = (t / nt) % mt, j = t % nt, n0 = j * TC;
      const int64_t m0 = row_start(i), rows = row_start(i + 1) - m0, cols = std::min(TC, NC - n0);
      if (rows <= 0) continue;
      if (fc) {
        const int64_t g = u;
        fn({xp + m0 * CI + g * K, CI, wt.data() + (g * nt + j) * K * TC, TC, yp + m0 * CO + g * N + n0, CO, rows,
            cols, K});
      } else {
        const int64_t b = u / groups, g = u % groups;
        const T* src = xp + (b * CI + g * K) * HW + n0;
        for (int64_t k = 0; k < K; ++k) std::copy(src + k * HW, src + k * HW + cols, tile.data() + k * TC);
        fn({wp + (g * N + m0) * K, K, tile.data(), TC, yp + (b * CO + g * N + m0) * HW + n0, HW, rows, cols, K});
      }
    }
  });
  return true;
}

template <typename T>
void forward_impl(const Tensor& x, const Tensor& w, double p, int64_t groups, Tensor& y, Tensor* arg) {
  const KernelTable& kt = kernels();
  if (arg == nullptr && std::isinf(p) && kt.inf_direct<T>() && forward_inf_direct<T>(x, w, groups, y, kt)) return;
  const Dims d = Dims::make(x.size(0), x.size(1), x.size(2), w.size(0), groups, kt.lanes<T>());
  PackBuffer<T> xp(d.G * d.Mp * d.Kp), wp(d.G * d.Np * d.Kp);
  PackBuffer<uint8_t> xbad(d.G * d.Mp), wbad(d.G * d.Np);
  pack_rows(x.const_data_ptr<T>(), d, xp.data(), xbad.data());
  pack_weight(w.const_data_ptr<T>(), d, wp.data(), wbad.data());

  FwdArgs<T> base{};
  base.K = d.K;
  base.Kp = d.Kp;
  base.M = d.M;
  base.N = d.N;
  base.mode = classify_p(p, base.ip);
  base.p = p;
  base.HW = d.HW;
  base.y_bstride = d.CO * d.HW;
  T* yptr = y.data_ptr<T>();
  int32_t* aptr = arg ? arg->data_ptr<int32_t>() : nullptr;
  std::vector<T> xt;
  int64_t xo_gstride = 0;
  const T* xo = arg ? original_rows(x.const_data_ptr<T>(), d, xt, xo_gstride, base.ldxo) : nullptr;
  base.ldwo = d.K;

  const auto fwd = kt.fwd<T>();
  parallel_tiles<T>(d, [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws) {
    FwdArgs<T> a = base;
    a.x = xp.data() + g * d.Mp * d.Kp;
    a.w = wp.data() + g * d.Np * d.Kp;
    a.xbad = xbad.data() + g * d.Mp;
    a.wbad = wbad.data() + g * d.Np;
    a.y = yptr + g * d.N * d.HW;
    a.arg = aptr ? aptr + g * d.N * d.HW : nullptr;
    a.xo = xo ? xo + g * xo_gstride : nullptr;
    a.wo = w.const_data_ptr<T>() + g * d.N * d.K;
    fwd(a, m0, m1, n0, n1, ws);
  });
}

std::tuple<Tensor, Tensor> norm_dist_forward_cpu(const Tensor& x_, const Tensor& w_, double p, int64_t groups,
                                                 bool need_argmax) {
  check_inputs("norm_dist_forward", x_, w_, p, groups);
  const Tensor x = x_.contiguous(), w = w_.contiguous();
  const int64_t B = x.size(0), HW = x.size(2), CO = w.size(0);
  Tensor y = at::empty({B, CO, HW}, x.options());
  const bool want_arg = need_argmax && std::isinf(p);
  Tensor arg = at::empty(want_arg ? at::IntArrayRef{B, CO, HW} : at::IntArrayRef{0}, x.options().dtype(at::kInt));
  if (y.numel() == 0) return {y, arg};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_dist_forward_cpu",
                             [&] { forward_impl<scalar_t>(x, w, p, groups, y, want_arg ? &arg : nullptr); });
  return {y, arg};
}

// ---------------------------------------------------------------------------------------------
// p = inf: the gradient g goes to the argmax index only, with the sign of its code:
//   dL/dx[b, g*K + k, s] += sign g,  dL/dw[o, k] -= sign g.
template <typename T>
void backward_inf(const Tensor& gy, const Tensor& arg, const Dims& d, Tensor* gx, Tensor* gw) {
  const T* g = gy.const_data_ptr<T>();
  const int32_t* a = arg.const_data_ptr<int32_t>();
  const int64_t HW = d.HW, K = d.K;
  bool ok = true;
  if (gx) {
    T* out = gx->data_ptr<T>();
    const int64_t CI = d.CI, CO = d.CO, N = d.N;
    ok &= for_each_output_row_by_batch(d.B, CO, [&](int64_t b, int64_t o) {
      const int64_t row = (b * CO + o) * HW;
      return scatter_row(a + row, g + row, out + (b * CI + (o / N) * K) * HW, HW, K, HW, 1, T(1));
    });
  }
  if (gw) {
    T* out = gw->data_ptr<T>();
    const int64_t CO = d.CO;
    ok &= for_each_output_row_by_channel(d.B, CO, [&](int64_t b, int64_t o) {
      const int64_t row = (b * CO + o) * HW;
      return scatter_row(a + row, g + row, out + o * K, HW, K, 1, 0, T(-1));
    });
  }
  TORCH_CHECK(ok, "norm_dist_backward: argmax holds an index outside [0, CI/groups)");
}

// Finite p: pack x, w, grad_y and 1/y per group, then one fused pass per tile accumulating both
// gradients. Tiles run in "diagonal" phases (tile (i, (i + d) mod n) in phase d), so that no two
// tiles of a phase share rows of grad_x or rows of grad_w: no atomics, no per-thread copies.
template <typename T>
void backward_finite(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& y, double p, const Dims& d0,
                     Tensor* gx, Tensor* gw) {
  const KernelTable& kt = kernels();
  const Dims d = Dims::make(d0.B, d0.CI, d0.HW, d0.CO, d0.G, kt.lanes<T>());
  const int64_t G = d.G, Mp = d.Mp, Np = d.Np, Kp = d.Kp, HW = d.HW, N = d.N, M = d.M;
  PackBuffer<T> xp(G * Mp * Kp), wp(G * Np * Kp);
  pack_rows(x.const_data_ptr<T>(), d, xp.data(), nullptr);
  pack_weight(w.const_data_ptr<T>(), d, wp.data(), nullptr);
  // coefficients (G, Mp, Np): g and 1/y (0 where y == 0 or 1/y overflows: gradient defined as 0)
  std::vector<T> gc(size_t(G * Mp * Np), T(0)), rc(size_t(G * Mp * Np), T(0));
  {
    const T* g = gy.const_data_ptr<T>();
    const T* yv = y.const_data_ptr<T>();
    at::parallel_for(0, G * M, 16, [&](int64_t begin, int64_t end) {
      for (int64_t gr = begin; gr < end; ++gr) {
        const int64_t grp = gr / M, r = gr % M, b = r / HW, s = r % HW;
        T* gdst = gc.data() + (grp * Mp + r) * Np;
        T* rdst = rc.data() + (grp * Mp + r) * Np;
        const int64_t off = (b * d.CO + grp * N) * HW + s;
        for (int64_t c = 0; c < N; ++c) {
          const T yy = yv[off + c * HW];
          T inv = yy == T(0) ? T(0) : T(1) / yy;
          if (std::isinf(inv)) inv = T(0);
          gdst[c] = g[off + c * HW];
          rdst[c] = inv;
        }
      }
    });
  }
  std::vector<T> gxp(gx ? size_t(G * Mp * Kp) : 0, T(0)), gwp(gw ? size_t(G * Np * Kp) : 0, T(0));

  BwdArgs<T> base{};
  base.K = d.K;
  base.Kp = Kp;
  base.Np = Np;
  base.mode = classify_p(p, base.ip);
  base.p = p;
  const auto bwd = kt.bwd<T>();
  auto run = [&](int64_t g, int64_t m0, int64_t m1, int64_t n0, int64_t n1, bool want_gx, bool want_gw) {
    BwdArgs<T> a = base;
    a.x = xp.data() + g * Mp * Kp;
    a.w = wp.data() + g * Np * Kp;
    a.g = gc.data() + g * Mp * Np;
    a.ry = rc.data() + g * Mp * Np;
    a.gx = want_gx ? gxp.data() + g * Mp * Kp : nullptr;
    a.gw = want_gw ? gwp.data() + g * Np * Kp : nullptr;
    bwd(a, m0, m1, n0, n1);
  };
  const int64_t threads = at::get_num_threads();
  const TilePlan tp = plan_tiles(d, 1, false);  // cache tiles; parallelism comes from the blocks below
  // all cache tiles of rows [r0, r1) x columns [c0, c1)
  auto run_block = [&](int64_t g, int64_t r0, int64_t r1, int64_t c0, int64_t c1, bool want_gx, bool want_gw) {
    for (int64_t m0 = r0; m0 < r1; m0 += tp.mc)
      for (int64_t n0 = c0; n0 < c1; n0 += tp.nc)
        run(g, m0, std::min(m0 + tp.mc, r1), n0, std::min(n0 + tp.nc, c1), want_gx, want_gw);
  };
  // Rows split in nI blocks, columns in nJ blocks, about one per thread each.
  const int64_t SR = round_up(ceil_div(Mp, threads), kRowPad), SC = round_up(ceil_div(Np, threads), kColPad);
  const int64_t nI = ceil_div(Mp, SR), nJ = ceil_div(Np, SC);
  if (gx && gw && (threads == 1 || G * std::min(nI, nJ) >= 2)) {
    // Fused: phase d runs block (i, (i + d) mod n) for every i, so that no two blocks of a phase
    // share rows of grad_x or rows of grad_w: no atomics, no per-thread copies, n <= threads barriers.
    const int64_t n = std::max(nI, nJ);
    std::vector<std::array<int64_t, 3>> phase;
    for (int64_t dd = 0; dd < n; ++dd) {
      phase.clear();
      for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < nI; ++i) {
          const int64_t j = (i + dd) % n;
          if (j < nJ) phase.push_back({g, i, j});
        }
      at::parallel_for(0, int64_t(phase.size()), 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const auto [g, i, j] = phase[t];
          run_block(g, i * SR, std::min((i + 1) * SR, Mp), j * SC, std::min((j + 1) * SC, Np), true, true);
        }
      });
    }
  } else {
    // One gradient at a time, each parallel over its own rows (tiny problems, or a single one).
    if (gx) {
      const int64_t nb = ceil_div(Mp, kRowPad);
      at::parallel_for(0, G * nb, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t g = t / nb, i = t % nb;
          run_block(g, i * kRowPad, std::min((i + 1) * kRowPad, Mp), 0, Np, true, false);
        }
      });
    }
    if (gw) {
      const int64_t nb = ceil_div(Np, kColPad);
      at::parallel_for(0, G * nb, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t g = t / nb, j = t % nb;
          run_block(g, 0, Mp, j * kColPad, std::min((j + 1) * kColPad, Np), false, true);
        }
      });
    }
  }
  if (gx) unpack_rows(gxp.data(), d, gx->data_ptr<T>());
  if (gw) unpack_weight(gwp.data(), d, gw->data_ptr<T>());
}

std::tuple<Tensor, Tensor> norm_dist_backward_cpu(const Tensor& grad_y_, const Tensor& x_, const Tensor& w_,
                                                  const Tensor& y_, const Tensor& argmax_, double p, int64_t groups,
                                                  std::array<bool, 2> output_mask) {
  check_inputs("norm_dist_backward", x_, w_, p, groups);
  const int64_t B = x_.size(0), CI = x_.size(1), HW = x_.size(2), CO = w_.size(0);
  const std::vector<int64_t> yshape{B, CO, HW};
  TORCH_CHECK(grad_y_.sizes() == at::IntArrayRef(yshape), "norm_dist_backward: grad_y must have shape ", yshape,
              ", got ", grad_y_.sizes());
  TORCH_CHECK(grad_y_.scalar_type() == x_.scalar_type(), "norm_dist_backward: grad_y must have the dtype of x");
  const Tensor x = x_.contiguous(), w = w_.contiguous(), gy = grad_y_.contiguous();
  Tensor gx = output_mask[0] ? at::zeros_like(x) : at::empty({0}, x.options());
  Tensor gw = output_mask[1] ? at::zeros_like(w) : at::empty({0}, w.options());
  if (!output_mask[0] && !output_mask[1]) return {gx, gw};
  if (gy.numel() == 0) return {gx, gw};
  const Dims d = Dims::make(B, CI, HW, CO, groups, 1);
  if (std::isinf(p)) {
    TORCH_CHECK(argmax_.sizes() == at::IntArrayRef(yshape) && argmax_.scalar_type() == at::kInt,
                "norm_dist_backward: at p = inf it needs the int32 argmax of shape ", yshape,
                " from norm_dist_forward(..., need_argmax=True), got ", argmax_.sizes(), " ", argmax_.scalar_type());
    const Tensor arg = argmax_.contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_dist_backward_cpu", [&] {
      backward_inf<scalar_t>(gy, arg, d, output_mask[0] ? &gx : nullptr, output_mask[1] ? &gw : nullptr);
    });
    return {gx, gw};
  }
  TORCH_CHECK(y_.sizes() == at::IntArrayRef(yshape) && y_.scalar_type() == x.scalar_type(),
              "norm_dist_backward: y must be the forward output, shape ", yshape, ", got ", y_.sizes());
  const Tensor y = y_.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_dist_backward_cpu", [&] {
    backward_finite<scalar_t>(gy, x, w, y, p, d, output_mask[0] ? &gx : nullptr, output_mask[1] ? &gw : nullptr);
  });
  return {gx, gw};
}

}  // namespace
}  // namespace certcore::cpu

TORCH_LIBRARY_IMPL(certcore, CPU, m) {
  m.impl("norm_dist_forward", &certcore::cpu::norm_dist_forward_cpu);
  m.impl("norm_dist_backward", &certcore::cpu::norm_dist_backward_cpu);
}
