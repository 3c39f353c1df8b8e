// Packing of (B, CI, HW) activations and (CO, CI/G) weights into the padded per-group row-major
// matrices the SIMD tile kernels read (see dist_kernels.h), the tile plans that split the work over
// threads, and the argmax-code walks of the p = inf gradients. Shared by norm_dist.cpp and
// bound_inf_dist.cpp; compiled for the baseline target.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "dist_kernels.h"

namespace certcore::cpu {

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sizes of one call. Rows are (b, s) pairs, M = B * HW; columns are the output channels of a group.
struct Dims {
  int64_t B, CI, HW, CO, G;
  int64_t K;   // input channels per group
  int64_t N;   // output channels per group
  int64_t M;   // rows
  int64_t Mp, Np, Kp;
  int64_t L, KL;  // lanes per vector; vectors per packed row (Kp = L * KL)

  static Dims make(int64_t B, int64_t CI, int64_t HW, int64_t CO, int64_t G, int lanes) {
    Dims d{B, CI, HW, CO, G, CI / G, CO / G, B * HW, 0, 0, 0, lanes, 0};
    d.Mp = round_up(std::max<int64_t>(d.M, 1), kRowPad);
    d.Np = round_up(std::max<int64_t>(d.N, 1), kColPad);
    d.Kp = round_up(std::max<int64_t>(d.K, 1), lanes);
    d.KL = d.Kp / lanes;
    return d;
  }

  // packed position of input channel k (lane-major, see dist_kernels.h)
  int64_t packed(int64_t k) const { return (k % KL) * L + k / KL; }

  // packed positions of k = 0..Kp-1 (those >= K are the padding)
  std::vector<int64_t> permutation() const {
    std::vector<int64_t> q(static_cast<size_t>(Kp));
    for (int64_t k = 0; k < Kp; ++k) q[size_t(k)] = packed(k);
    return q;
  }
};

// An array of n elements left uninitialised, for buffers the packers fill completely (a std::vector
// would zero them first: about 5 % of a p = inf forward pass).
template <typename T>
class PackBuffer {
 public:
  explicit PackBuffer(int64_t n) : n_(n), p_(new T[size_t(n)]) {}
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  int64_t size() const { return n_; }
  const T* begin() const { return p_.get(); }
  const T* end() const { return p_.get() + n_; }

 private:
  int64_t n_;
  std::unique_ptr<T[]> p_;
};

// f(g, b, slab) for every group g and batch element b, in parallel; x + slab is x[b, g*K, 0], the
// (K, HW) slab of the group's input channels.
template <class F>
void for_each_group_slab(const Dims& d, const F& f) {
  at::parallel_for(0, d.G * d.B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t gb = begin; gb < end; ++gb) {
      const int64_t g = gb / d.B, b = gb % d.B;
      f(g, b, (b * d.CI + g * d.K) * d.HW);
    }
  });
}

// HW packed rows of Kp from a (K, HW) slab: dst[s*Kp + packed(k)] = src[k*HW + s], zero for
// K <= k < Kp. Packed positions [j*L, (j+1)*L) of a row (one vector, a cache line or half of one)
// hold the channels k = l*KL + j, l < L: the loop walks the destination in order, L channel rows x
// up to 16 positions s at a time, so that the L source rows are read as sequential streams and each
// destination vector is written whole.
template <typename T>
void pack_slab(const T* __restrict src, int64_t HW, const Dims& d, T* __restrict dst) {
  const int64_t K = d.K, Kp = d.Kp, L = d.L, KL = d.KL;
  if (HW == 1) {  // one row: read each chunk of KL channels sequentially, write with stride L
    for (int64_t l = 0; l < L; ++l) {
      const int64_t k0 = l * KL, n = std::clamp<int64_t>(K - k0, 0, KL);
      for (int64_t j = 0; j < n; ++j) dst[j * L + l] = src[k0 + j];
      for (int64_t j = n; j < KL; ++j) dst[j * L + l] = T(0);
    }
    return;
  }
  constexpr int64_t SB = 16;
  for (int64_t j = 0; j < KL; ++j) {
    for (int64_t s0 = 0; s0 < HW; s0 += SB) {
      const int64_t ns = std::min(SB, HW - s0);
      for (int64_t s = 0; s < ns; ++s) {
        T* dv = dst + (s0 + s) * Kp + j * L;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t k = l * KL + j;
          dv[l] = k < K ? src[k * HW + s0 + s] : T(0);
        }
      }
    }
  }
}

// 1 where one of the n values is NaN or infinite.
template <typename T>
inline uint8_t any_nonfinite(const T* v, int64_t n) {
  uint8_t flag = 0;
  for (int64_t i = 0; i < n; ++i) flag |= (v[i] - v[i]) != T(0);
  return flag;
}

// out (G, Mp, Kp): out[g][b*HW + s][packed(k)] = x[b][g*K + k][s], zero padded. If bad != nullptr,
// bad[g*Mp + r] = 1 where the row holds a NaN or an infinity.
template <typename T>
void pack_rows(const T* x, const Dims& d, T* out, uint8_t* bad) {
  const int64_t G = d.G, HW = d.HW, Kp = d.Kp, Mp = d.Mp;
  for_each_group_slab(d, [&](int64_t g, int64_t b, int64_t slab) {
    T* dst = out + (g * Mp + b * HW) * Kp;  // (HW, Kp) rows
    pack_slab(x + slab, HW, d, dst);
    if (bad) {
      for (int64_t s = 0; s < HW; ++s) bad[g * Mp + b * HW + s] = any_nonfinite(dst + s * Kp, Kp);
    }
  });
  for (int64_t g = 0; g < G; ++g) {
    std::fill(out + (g * Mp + d.M) * Kp, out + (g + 1) * Mp * Kp, T(0));
    if (bad) std::fill(bad + g * Mp + d.M, bad + (g + 1) * Mp, uint8_t(0));
  }
}

// Rows in the original channel order, for the argmax searches: row r = b*HW + s of group g at
// *base + g * group_stride + r * ld. With HW == 1 these are x itself (no copy); else a (G, M, K)
// transposed copy is made in `store`.
template <typename T>
const T* original_rows(const T* x, const Dims& d, std::vector<T>& store, int64_t& group_stride, int64_t& ld) {
  if (d.HW == 1) {
    group_stride = d.K;
    ld = d.CI;
    return x;
  }
  const int64_t G = d.G, K = d.K, HW = d.HW, M = d.M;
  store.resize(size_t(G * M * K));
  T* out = store.data();
  for_each_group_slab(d, [&](int64_t g, int64_t b, int64_t slab) {
    T* dst = out + (g * M + b * HW) * K;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t s = 0; s < HW; ++s) dst[s * K + k] = x[slab + k * HW + s];
  });
  group_stride = M * K;
  ld = K;
  return out;
}

// Inverse of pack_rows for a gradient: out[b][g*K + k][s] = src[g][b*HW + s][packed(k)].
template <typename T>
void unpack_rows(const T* src, const Dims& d, T* out) {
  const int64_t K = d.K, HW = d.HW, Kp = d.Kp, Mp = d.Mp;
  const std::vector<int64_t> perm = d.permutation();
  const int64_t* q = perm.data();
  for_each_group_slab(d, [&](int64_t g, int64_t b, int64_t slab) {
  const T* s0 = src + (g * Mp + b * HW) * Kp;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t s = 0; s < HW; ++s) out[slab + k * HW + s] = s0[s * Kp + q[k]];
  });
}

// out (G, Np, Kp): out[g][c][packed(k)] = w[g*N + c][k], zero padded; bad[g*Np + c] as in pack_rows.
template <typename T>
void pack_weight(const T* w, const Dims& d, T* out, uint8_t* bad) {
  const int64_t G = d.G, N = d.N, K = d.K, Kp = d.Kp, Np = d.Np;
  at::parallel_for(0, G * Np, 64, [&](int64_t begin, int64_t end) {
    for (int64_t gc = begin; gc < end; ++gc) {
      const int64_t g = gc / Np, c = gc % Np;
      T* dst = out + gc * Kp;
      if (c < N) {
        const T* src = w + (g * N + c) * K;
        pack_slab(src, 1, d, dst);
        if (bad) bad[gc] = any_nonfinite(src, K);
      } else {
        std::fill(dst, dst + Kp, T(0));
        if (bad) bad[gc] = 0;
      }
    }
  });
}

// Inverse of pack_weight for a gradient: out[g*N + c][k] = src[g][c][packed(k)].
template <typename T>
void unpack_weight(const T* src, const Dims& d, T* out) {
  const int64_t G = d.G, N = d.N, K = d.K, Kp = d.Kp, Np = d.Np;
  const std::vector<int64_t> perm = d.permutation();
  const int64_t* q = perm.data();
  at::parallel_for(0, G * N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t gcn = begin; gcn < end; ++gcn) {
      const int64_t g = gcn / N, c = gcn % N;
      const T* s0 = src + (g * Np + c) * Kp;
      T* dst = out + gcn * K;
      for (int64_t k = 0; k < K; ++k) dst[k] = s0[q[k]];
    }
  });
}

// Tiles of a group's (Mp x Np) output: ni x nj tiles of mc x nc.
struct TilePlan {
  int64_t mc, nc, ni, nj;
};

// Tiles as large as the cache blocking wants, shrunk until there are at least min_tasks of them
// (counting the G groups) or they reach the register-block size.
inline TilePlan plan_tiles(const Dims& d, int64_t min_tasks, bool need_both_dims) {
  int64_t mc = std::min(kMaxTileRows, d.Mp), nc = std::min(kMaxTileCols, d.Np);
  auto count = [&](int64_t a, int64_t b) {
    const int64_t ni = ceil_div(d.Mp, a), nj = ceil_div(d.Np, b);
    return need_both_dims ? d.G * std::min(ni, nj) : d.G * ni * nj;
  };
  while (count(mc, nc) < min_tasks && (mc > kRowPad || nc > kColPad)) {
    const bool shrink_rows = (mc > kRowPad) && (nc <= kColPad || ceil_div(d.Mp, mc) <= ceil_div(d.Np, nc));
    if (shrink_rows)
      mc = std::max(kRowPad, round_up(mc / 2, kRowPad));
    else
      nc = std::max(kColPad, round_up(nc / 2, kColPad));
  }
  return {mc, nc, ceil_div(d.Mp, mc), ceil_div(d.Np, nc)};
}

// f(g, m0, m1, n0, n1, ws) for every tile of every group's (Mp x Np) output, in parallel (at least
// four tiles per thread where the problem allows), ws a per-thread workspace of tile_workspace<T>().
template <typename T, class F>
void parallel_tiles(const Dims& d, const F& f) {
  const TilePlan tp = plan_tiles(d, 4 * at::get_num_threads(), /*need_both_dims=*/false);
  const int64_t per_group = tp.ni * tp.nj;
  at::parallel_for(0, d.G * per_group, 1, [&](int64_t begin, int64_t end) {
    std::unique_ptr<T[]> ws(new T[size_t(tile_workspace<T>())]);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / per_group, i = (task % per_group) / tp.nj, j = task % tp.nj;
      const int64_t m0 = i * tp.mc, n0 = j * tp.nc;
      f(g, m0, std::min(m0 + tp.mc, d.Mp), n0, std::min(n0 + tp.nc, d.Np), ws.get());
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Argmax codes of the p = inf ops: k when the winning difference entered with a + sign (x - w, or
// u - w / l - w in the bounds), ~k when with a - sign; kNoArg: no index (no gradient).
constexpr int32_t kNoArg = std::numeric_limits<int32_t>::min();
inline int64_t arg_index(int32_t code) { return code >= 0 ? int64_t(code) : ~int64_t(code); }
template <typename T>
inline T arg_signed(int32_t code, T g) {
  return code >= 0 ? g : -g;
}

// The HW codes of one output row: dst[k * k_stride + s * s_stride] += scale * sign(code[s]) * g[s],
// k = arg_index(code[s]), s < HW. Returns false where a code names an index k >= K (skipped).
template <typename T>
inline bool scatter_row(const int32_t* __restrict code, const T* __restrict g, T* __restrict dst, int64_t HW,
                        int64_t K, int64_t k_stride, int64_t s_stride, T scale) {
  bool ok = true;
  for (int64_t s = 0; s < HW; ++s) {
    const int64_t k = arg_index(code[s]);
    if (k >= K) {
      ok = false;
      continue;
    }
    dst[k * k_stride + s * s_stride] += scale * arg_signed(code[s], g[s]);
  }
  return ok;
}

// ok = f(b, o) for every batch element b < B and output channel o < CO, in parallel over b: the
// scatters into grad_x (rows of b) never write the same element from two threads. Returns whether
// every call returned true.
template <class F>
bool for_each_output_row_by_batch(int64_t B, int64_t CO, const F& f) {
  std::atomic<bool> all_ok{true};
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    bool ok = true;
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t o = 0; o < CO; ++o) ok &= f(b, o);
    if (!ok) all_ok = false;
  });
  return all_ok.load();
}

// The same in parallel over blocks of 8 output channels, each block walking b then o: the scatters
// into grad_w (rows of o) stay in L1 and each cache line of grad_y and of the codes serves the block.
template <class F>
bool for_each_output_row_by_channel(int64_t B, int64_t CO, const F& f) {
  constexpr int64_t OB = 8;
  std::atomic<bool> all_ok{true};
  at::parallel_for(0, ceil_div(CO, OB), 1, [&](int64_t blk0, int64_t blk1) {
    bool ok = true;
    for (int64_t ob = blk0 * OB; ob < std::min(CO, blk1 * OB); ob += OB)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t o = ob; o < std::min(CO, ob + OB); ++o) ok &= f(b, o);
    if (!ok) all_ok = false;
  });
  return all_ok.load();
}

}  // namespace certcore::cpu
