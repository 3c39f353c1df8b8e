// Shared host-side pieces of norm_dist.cu (forward) and norm_dist_backward.cu (backward): problem
// sizes, argument checks and the integer-p dispatch. The two ops live in two translation units so
// that their (many) template instances compile in parallel.
#pragma once

#include "common.cuh"

#include <cmath>
#include <type_traits>

namespace certcore::cuda::norm_dist_detail {

// Problem sizes passed to every norm_dist kernel. N = B*HW. t0, t1: tile counts of the first two
// dimensions of the kernel's output plane (see each kernel); chunk: n per slice (grad_w only).
struct Shape {
  int64_t N, HW, CI, CO;
  int CI_g, CO_g, G;
  int64_t t0, t1;
  int64_t chunk;
};

// Integer p in 1..8 (the repeated-multiplication algorithm), else 0.
inline int small_int_p(double p) {
  if (p >= 1.0 && p <= 8.0 && p == std::floor(p)) return static_cast<int>(p);
  return 0;
}

// Calls f(std::integral_constant<int, P>{}) for P in 1..8.
template <class F>
void dispatch_int_p(int P, F&& f) {
  switch (P) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    default: TORCH_INTERNAL_ASSERT(false, "certcore: bad integer p ", P);
  }
}

// Validated sizes of a norm_dist call.
struct Dims {
  int64_t B, CI, HW, CO, G, CI_g, CO_g;
};

inline Dims check_norm_dist_inputs(const at::Tensor& x, const at::Tensor& w, double p, int64_t groups) {
  const at::ScalarType dt = check_leading_float_tensor(x, "certcore.norm_dist (CUDA)", "x", 3);
  check_float_tensor(w, "w", x.device(), 2, dt);
  TORCH_CHECK(p > 0.0, "certcore.norm_dist: p must be in (0, inf], got ", p);
  TORCH_CHECK(groups >= 1, "certcore.norm_dist: groups must be >= 1, got ", groups);
  Dims d{x.size(0), x.size(1), x.size(2), w.size(0), groups, 0, 0};
  TORCH_CHECK(d.CI % groups == 0 && d.CO % groups == 0, "certcore.norm_dist: groups = ", groups,
              " must divide CI = ", d.CI, " and CO = ", d.CO);
  d.CI_g = d.CI / groups;
  d.CO_g = d.CO / groups;
  TORCH_CHECK(w.size(1) == d.CI_g, "certcore.norm_dist: w must have shape (CO, CI/groups) = (", d.CO, ", ", d.CI_g,
              "), got ", w.sizes());
  check_fits_int(d.CI_g, "CI/groups");
  check_fits_int(d.CO_g, "CO/groups");
  check_fits_int(groups, "groups");
  return d;
}

inline Shape make_shape(const Dims& d) {
  Shape sh{};
  sh.N = d.B * d.HW;
  sh.HW = d.HW;
  sh.CI = d.CI;
  sh.CO = d.CO;
  sh.CI_g = static_cast<int>(d.CI_g);
  sh.CO_g = static_cast<int>(d.CO_g);
  sh.G = static_cast<int>(d.G);
  return sh;
}

}  // namespace certcore::cuda::norm_dist_detail
