// Shared building blocks of certcore's CUDA kernels (norm_dist.cu, norm_dist_backward.cu, bound_inf_dist.cu).
//
// Layout conventions (see csrc/certcore.cpp): x, lower, upper, grad_x: (B, CI, HW); w: (CO, CI_g);
// y, grad_y, argmax: (B, CO, HW); groups G, CI_g = CI / G, CO_g = CO / G; output channel o of group g
// (global channel g*CO_g + o) reads input channels [g*CI_g, (g+1)*CI_g). The batch and spatial
// dimensions are flattened into one index n = b*HW + s, n < N = B*HW, so every op is a "GEMM" over
// (n, o) or (n, i) or (o, i) with a reduction over the remaining index; the element of a (B, C, HW)
// tensor at (n, channel c) sits at offset (b*C + c)*HW + s.
//
// All offsets are int64_t: B*CO*HW and B*CI*HW may exceed 2^31. Tile-local indices are int.
//
// Only light headers here (no torch/extension.h, no ATen/cuda/CUDAContext.h): they dominate the
// compile time otherwise.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace certcore::cuda {

// ---------------------------------------------------------------------------------------------
// Tiling constants of the GEMM-like kernels.
//
// A block of 256 threads computes a 64 x 64 tile of outputs; thread t has the 4 x 4 outputs
// (row + 16*m, col + 16*j), m, j < 4, where (row, col) = (t % 16, t / 16) or (t / 16, t % 16)
// (see ThreadMap). The reduction dimension is walked in chunks of kBK = 16: each chunk of both
// operands is staged in shared memory as tile[k][c] (k < 16 reduction index, c < 64 output index),
// padded to 65 columns so that the transposing stores hit distinct banks.
// ---------------------------------------------------------------------------------------------
constexpr int kThreads = 256;
constexpr int kTile = 64;
constexpr int kBK = 16;
constexpr int kReg = 4;
constexpr int kLd = kTile + 1;
constexpr int kWarp = 32;
static_assert(kThreads * 4 == kBK * kTile, "each thread loads exactly 4 elements of a tile");
static_assert(16 * kReg == kTile && 16 * 16 == kThreads, "16 x 16 threads, 4 x 4 outputs each");

template <typename T>
using SmemTile = T[kBK][kLd];

// Position of a thread inside the 16 x 16 thread grid. `row` indexes the first output dimension of
// the tile and `col` the second. `row_fast` puts consecutive threads on consecutive rows: used when
// the rows are n and HW > 1, so that stores to (B, C, HW) tensors are coalesced along s.
struct ThreadMap {
  int row, col;
  __device__ __forceinline__ explicit ThreadMap(bool row_fast) {
    const int fast = static_cast<int>(threadIdx.x) % 16, slow = static_cast<int>(threadIdx.x) / 16;
    row = row_fast ? fast : slow;
    col = row_fast ? slow : fast;
  }
};

// Splits a flat block index into (i0 fastest, i1, i2) for extents (n0, n1, *).
__device__ __forceinline__ void split3(int64_t id, int64_t n0, int64_t n1, int64_t& i0, int64_t& i1, int64_t& i2) {
  i0 = id % n0;
  id /= n0;
  i1 = id % n1;
  i2 = id / n1;
}

// Offset of the element (n, channel 0) of a (B, C, HW) tensor: (b*C)*HW + s with (b, s) = divmod(n, HW).
__device__ __forceinline__ int64_t row_base(int64_t n, int64_t HW, int64_t C) {
  if (HW == 1) return n * C;
  const int64_t b = n / HW;
  return b * C * HW + (n - b * HW);
}

// ---------------------------------------------------------------------------------------------
// Register tiles: a thread's kReg x kReg outputs (m, j) and the kReg-element fragments of a shared
// tile row that it combines, fully unrolled (compile-time indices, so everything stays in registers).
// ---------------------------------------------------------------------------------------------

// r[m][j] = v for all m, j < kReg.
template <typename T>
__device__ __forceinline__ void fill_regs(T (&r)[kReg][kReg], std::type_identity_t<T> v) {
#pragma unroll
  for (int m = 0; m < kReg; ++m)
#pragma unroll
    for (int j = 0; j < kReg; ++j) r[m][j] = v;
}

// frag[m] = row[first + 16*m], m < kReg: the thread's elements of one row k of a shared tile
// (first = tm.row or tm.col).
template <typename T>
__device__ __forceinline__ void load_frag(T (&frag)[kReg], const T (&row)[kLd], int first) {
#pragma unroll
  for (int m = 0; m < kReg; ++m) frag[m] = row[first + 16 * m];
}

// For one reduction index k: loads a[m] = rows[tm.row + 16m] and b[j] = cols[tm.col + 16j] (all a
// first, then all b), then calls f(m, j, a[m], b[j]) for m, j < kReg in row-major order.
template <typename T, class F>
__device__ __forceinline__ void for_each_pair(const T (&rows)[kLd], const T (&cols)[kLd], const ThreadMap& tm, F f) {
  T a[kReg], b[kReg];
  load_frag(a, rows, tm.row);
  load_frag(b, cols, tm.col);
#pragma unroll
  for (int m = 0; m < kReg; ++m)
#pragma unroll
    for (int j = 0; j < kReg; ++j) f(m, j, a[m], b[j]);
}

// ---------------------------------------------------------------------------------------------
// Math helpers (float and double overloads; accurate library functions, no fast-math intrinsics).
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ float dev_log2(float v) { return log2f(v); }
__device__ __forceinline__ double dev_log2(double v) { return log2(v); }
__device__ __forceinline__ float dev_exp2(float v) { return exp2f(v); }
__device__ __forceinline__ double dev_exp2(double v) { return exp2(v); }
__device__ __forceinline__ float dev_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double dev_pow(double a, double b) { return pow(a, b); }

// v^E for a compile-time E >= 0 by repeated squaring (E = 8: three multiplications).
template <int E, typename T>
__device__ __forceinline__ T pown(T v) {
  if constexpr (E == 0) {
    return T(1);
  } else if constexpr (E == 1) {
    return v;
  } else {
    const T h = pown<E / 2>(v);
    if constexpr (E % 2 == 1) {
      return h * h * v;
    } else {
      return h * h;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Shared-memory tile loaders. Each stores exactly one 16 x 64 tile (4 elements per thread) and
// writes zeros outside the valid range, so that padded reduction indices contribute nothing:
// with x = w = 0 the difference is t = 0, and |0|^p = 0, max(., 0) ignores it, 0 * anything = 0.
// ---------------------------------------------------------------------------------------------

template <typename T>
struct Identity {
  __device__ __forceinline__ T operator()(T v) const { return v; }
};

// tile[k][c] = op(src[b, cofs + k0 + k, s]) with (b, s) = divmod(n0 + c, HW): the reduction runs over
// channels (rows k) and the tile columns are n. Zero where k0 + k >= Cg or n0 + c >= N.
// HW > 1: consecutive threads read consecutive n (contiguous s) and each thread keeps one column,
// whose base offset is computed once (one 64-bit division per thread per kernel).
// HW == 1: consecutive threads read consecutive channels (contiguous within a row n) and each
// thread keeps one row k.
template <typename T>
class ChannelRowsLoader {
 public:
  __device__ ChannelRowsLoader(const T* __restrict__ src, int64_t N, int64_t HW, int64_t C, int64_t cofs, int Cg,
                               int64_t n0)
      : src_(src), N_(N), HW_(HW), C_(C), Cg_(Cg), n0_(n0) {
    if (HW > 1) {
      fixed_ = static_cast<int>(threadIdx.x) % kTile;  // column c
      const int64_t n = n0 + fixed_;
      base_ = n < N ? row_base(n, HW, C) + cofs * HW : -1;
    } else {
      fixed_ = static_cast<int>(threadIdx.x) % kBK;  // row k
      base_ = n0 * C + cofs;
    }
  }

  template <class Op>
  __device__ __forceinline__ void load(SmemTile<T>& tile, int k0, Op op) const {
    if (HW_ > 1) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int k = static_cast<int>(threadIdx.x) / kTile + r * (kThreads / kTile);  // 0..15
        T v = T(0);
        if (base_ >= 0 && k0 + k < Cg_) v = op(src_[base_ + static_cast<int64_t>(k0 + k) * HW_]);
        tile[k][fixed_] = v;
      }
    } else {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int c = static_cast<int>(threadIdx.x) / kBK + r * (kThreads / kBK);  // 0..63
        T v = T(0);
        if (n0_ + c < N_ && k0 + fixed_ < Cg_) v = op(src_[base_ + static_cast<int64_t>(c) * C_ + (k0 + fixed_)]);
        tile[fixed_][c] = v;
      }
    }
  }

  __device__ __forceinline__ void load(SmemTile<T>& tile, int k0) const { load(tile, k0, Identity<T>{}); }

 private:
  const T* __restrict__ src_;
  int64_t N_, HW_, C_;
  int Cg_;
  int64_t n0_;
  int fixed_;
  int64_t base_;
};

// tile[k][c] = w[(row0 + c)*ldw + k0 + k]: columns are rows of w (output channels), the reduction
// runs along a row of w (input channel). Zero where c >= rows or k0 + k >= K. Consecutive threads
// read consecutive k (contiguous in w).
template <typename T>
__device__ __forceinline__ void load_w_along_k(SmemTile<T>& tile, const T* __restrict__ w, int64_t row0, int rows,
                                               int64_t ldw, int k0, int K) {
  const int k = static_cast<int>(threadIdx.x) % kBK;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int c = static_cast<int>(threadIdx.x) / kBK + r * (kThreads / kBK);  // 0..63
    T v = T(0);
    if (c < rows && k0 + k < K) v = w[(row0 + c) * ldw + (k0 + k)];
    tile[k][c] = v;
  }
}

// tile[k][c] = w[(row0 + k0 + k)*ldw + col0 + c]: the reduction runs over rows of w (output
// channels), the columns are input channels. Zero where k0 + k >= K or c >= cols. Consecutive
// threads read consecutive c (contiguous in w).
template <typename T>
__device__ __forceinline__ void load_w_along_rows(SmemTile<T>& tile, const T* __restrict__ w, int64_t row0, int K,
                                                  int k0, int64_t col0, int cols, int64_t ldw) {
  const int c = static_cast<int>(threadIdx.x) % kTile;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int k = static_cast<int>(threadIdx.x) / kTile + r * (kThreads / kTile);  // 0..15
    T v = T(0);
    if (k0 + k < K && c < cols) v = w[(row0 + k0 + k) * ldw + col0 + c];
    tile[k][c] = v;
  }
}

// ---------------------------------------------------------------------------------------------
// Block context of the forward kernels (norm_dist.cu, bound_inf_dist.cu). Output plane: rows n
// (n0 + 0..63), columns o (o0 + 0..63 within group g); blockIdx.x = n_tile + t0 * (o_tile + t1 * g).
// The reduction runs over the group's CI_g input channels in chunks of kBK, the (B, CI, HW) inputs
// staged by ChannelRowsLoader(src, N, HW, CI, g*CI_g, CI_g, n0). With tm = ThreadMap(HW > 1)
// (rows fast, for coalesced stores along s), thread (tm.row, tm.col) owns the outputs
// (n0 + tm.row + 16m, o0 + tm.col + 16j), m, j < kReg. S is the kernel's shape struct (members N, HW,
// CI, CO, CI_g, CO_g, t0, t1).
// ---------------------------------------------------------------------------------------------
struct FwdTile {
  int64_t n0, g;
  int o0, orows;  // orows: output channels of the tile inside the group (<= kTile)

  template <class S>
  __device__ __forceinline__ explicit FwdTile(const S& sh) {
    int64_t nt, ot;
    split3(blockIdx.x, sh.t0, sh.t1, nt, ot, g);
    n0 = nt * kTile;
    o0 = static_cast<int>(ot) * kTile;
    orows = min(kTile, sh.CO_g - o0);
  }

  // ws[k][c] = w[g*CO_g + o0 + c, k0 + k] of the (CO, CI_g) weight.
  template <typename T, class S>
  __device__ __forceinline__ void load_w(SmemTile<T>& ws, const T* __restrict__ w, const S& sh, int k0) const {
    load_w_along_k(ws, w, g * sh.CO_g + o0, orows, sh.CI_g, k0, sh.CI_g);
  }

  // Calls f(m, j, offset of y[n, g*CO_g + o]) for each of the thread's outputs inside the problem
  // (y is (B, CO, HW)).
  template <class S, class F>
  __device__ __forceinline__ void for_each_output(const S& sh, const ThreadMap& tm, F f) const {
#pragma unroll
    for (int m = 0; m < kReg; ++m) {
      const int64_t n = n0 + tm.row + 16 * m;
      if (n >= sh.N) continue;
      const int64_t base = row_base(n, sh.HW, sh.CO) + (g * sh.CO_g) * sh.HW;
#pragma unroll
      for (int j = 0; j < kReg; ++j) {
        const int o = o0 + tm.col + 16 * j;
        if (o < sh.CO_g) f(m, j, base + static_cast<int64_t>(o) * sh.HW);
      }
    }
  }
};

// For reductions over n (grad_w): tile[k][c] = op(src[b, cofs + c, s]) with (b, s) = divmod(nk + k, HW):
// rows are n, columns channels. Zero where nk + k >= n_end or c >= cols.
// HW > 1: consecutive threads read consecutive n; each thread owns row k = t % 16, whose (b, s) is
// kept in a NCursor and advanced by 16 per chunk (no division in the loop).
// HW == 1: consecutive threads read consecutive channels; each thread owns column c = t % 64.
struct NCursor {
  int64_t b, s;
  __device__ __forceinline__ NCursor(int64_t n, int64_t HW) {
    b = n / HW;
    s = n - b * HW;
  }
  __device__ __forceinline__ void advance(int64_t HW) {
    s += kBK;
    while (s >= HW) {
      s -= HW;
      ++b;
    }
  }
};

template <typename T, class Op>
__device__ __forceinline__ void load_n_rows(SmemTile<T>& tile, const T* __restrict__ src, int64_t HW, int64_t C,
                                            int64_t cofs, int cols, int64_t nk, int64_t n_end, const NCursor& cur,
                                            Op op) {
  if (HW > 1) {
    const int k = static_cast<int>(threadIdx.x) % kBK;
    const bool valid_n = nk + k < n_end;
    const int64_t base = (cur.b * C + cofs) * HW + cur.s;  // cursor is at n = nk + k
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int c = static_cast<int>(threadIdx.x) / kBK + r * (kThreads / kBK);  // 0..63
      T v = T(0);
      if (valid_n && c < cols) v = op(src[base + static_cast<int64_t>(c) * HW]);
      tile[k][c] = v;
    }
  } else {
    const int c = static_cast<int>(threadIdx.x) % kTile;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int k = static_cast<int>(threadIdx.x) / kTile + r * (kThreads / kTile);  // 0..15
      T v = T(0);
      if (nk + k < n_end && c < cols) v = op(src[(nk + k) * C + cofs + c]);
      tile[k][c] = v;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Deterministic reduction of split-K partial results: out[e] = sum_{s < S} ws[s*E + e], summed in
// the fixed order s = 0, 1, ... (no atomics).
// ---------------------------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(kThreads) sum_slices_kernel(const T* __restrict__ ws, int64_t S, int64_t E,
                                                              T* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < E; e += stride) {
    T acc = T(0);
    for (int64_t s = 0; s < S; ++s) acc += ws[s * E + e];
    out[e] = acc;
  }
}

template <typename T>
void launch_sum_slices(const T* ws, int64_t S, int64_t E, T* out, cudaStream_t stream) {
  if (E == 0) return;
  const int64_t blocks = std::min<int64_t>((E + kThreads - 1) / kThreads, int64_t{1} << 20);
  sum_slices_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(ws, S, E, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------------------------
// Gradients through stored argmax indices (p = inf and bound_inf_dist), without float atomics.
//
// An ArgStream is one output y (B, CO, HW) with its int32 argmax codes and its incoming gradient g:
// a code i >= 0 means dy/d(input_i) = +1 and dy/dw_i = -1 (y came from input_i - w_i), a code ~i
// means dy/d(input_i) = -1 and dy/dw_i = +1 (y came from w_i - input_i); codes outside [0, CI_g)
// (INT32_MIN = "no index") carry no gradient. `pos` receives the +g of codes i >= 0 and `neg`
// the -g of codes ~i (both are (B, CI, HW) tensors; they are the same tensor for norm_dist, and
// (grad_upper, grad_lower) or (grad_lower, grad_upper) for the two bounds). A null pointer means
// "not requested".
//
// Determinism: every output element is owned by exactly one lane of one warp, which adds the
// contributions in a fixed order (o ascending for grad_x; n ascending within a slice, slices summed
// in order, for grad_w). The warp loads 32 (code, g) pairs at a time and broadcasts them with
// shuffles; the lane with i % 32 == lane does the read-modify-write.
// ---------------------------------------------------------------------------------------------
template <typename T>
struct ArgStream {
  const int32_t* __restrict__ arg = nullptr;
  const T* __restrict__ grad = nullptr;
  T* pos = nullptr;
  T* neg = nullptr;
};

struct ArgShape {
  int64_t N, HW, CI, CO;
  int CI_g, CO_g, G;
};

// One batch of up to 32 outputs of each stream, one per lane (lanes >= cnt have none): lane l < cnt
// reads its (code, g) pairs at offset `off`, then the pairs are broadcast in lane order j = 0 ..
// cnt-1 (streams in order within each j), and for a code naming an input index i < CI_g the lane
// with i % 32 == lane calls f(q, i, is_neg, g) (q: the stream, is_neg: the code was ~i).
template <typename T, int kStreams, class F>
__device__ __forceinline__ void argmax_warp_batch(const ArgStream<T> (&st)[2], int lane, int cnt, int64_t off, int CI_g,
                                                  F f) {
  int32_t code[kStreams];
  T gv[kStreams];
#pragma unroll
  for (int q = 0; q < kStreams; ++q) {
    code[q] = INT32_MIN;
    gv[q] = T(0);
    if (lane < cnt) {
      code[q] = st[q].arg[off];
      gv[q] = st[q].grad[off];
    }
  }
  for (int j = 0; j < cnt; ++j) {
#pragma unroll
    for (int q = 0; q < kStreams; ++q) {
      const int32_t c = __shfl_sync(0xffffffffu, code[q], j);
      const T v = __shfl_sync(0xffffffffu, gv[q], j);
      const bool is_neg = c < 0;
      const int32_t i = is_neg ? ~c : c;  // >= 0; INT32_MIN -> INT32_MAX (out of range)
      if (i < CI_g && (i % kWarp) == lane) f(q, i, is_neg, v);
    }
  }
}

// One warp per (n, g): grad_in[b, g*CI_g + i, s] += (+-) g[b, g*CO_g + o, s] for o = 0 .. CO_g-1.
// The (B, CI, HW) outputs must be zero-initialised.
template <typename T, int kStreams>
__global__ void __launch_bounds__(kThreads) argmax_scatter_input_kernel(ArgStream<T> s0, ArgStream<T> s1, ArgShape sh) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  if (warp >= sh.N * sh.G) return;  // uniform across the warp
  const int64_t n = warp % sh.N, g = warp / sh.N;
  const int64_t in_base = row_base(n, sh.HW, sh.CI) + g * sh.CI_g * sh.HW;   // + i * HW
  const int64_t out_base = row_base(n, sh.HW, sh.CO) + g * sh.CO_g * sh.HW;  // + o * HW
  const ArgStream<T> st[2] = {s0, s1};
  for (int o0 = 0; o0 < sh.CO_g; o0 += kWarp) {
    const int cnt = min(kWarp, sh.CO_g - o0);
    const int64_t off = lane < cnt ? out_base + static_cast<int64_t>(o0 + lane) * sh.HW : 0;
    argmax_warp_batch<T, kStreams>(st, lane, cnt, off, sh.CI_g, [&](int q, int32_t i, bool is_neg, T v) {
      T* dst = is_neg ? st[q].neg : st[q].pos;
      if (dst != nullptr) dst[in_base + static_cast<int64_t>(i) * sh.HW] += is_neg ? -v : v;
    });
  }
}

// One warp per (o, slice of n): out[slice, o, i] -= (+-) g[b, o, s] for n in the slice, ascending.
// out is (S, CO, CI_g) and zero-initialised; the slices are summed afterwards by sum_slices_kernel.
template <typename T, int kStreams>
__global__ void __launch_bounds__(kThreads) argmax_scatter_weight_kernel(ArgStream<T> s0, ArgStream<T> s1, ArgShape sh,
                                                                          int64_t chunk, int64_t S,
                                                                          T* __restrict__ out) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  if (warp >= sh.CO * S) return;  // uniform across the warp
  const int64_t o = warp % sh.CO, slice = warp / sh.CO;
  const int64_t n_begin = slice * chunk, n_end = sh.N < n_begin + chunk ? sh.N : n_begin + chunk;
  T* dst = out + (slice * sh.CO + o) * sh.CI_g;
  const ArgStream<T> st[2] = {s0, s1};
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kWarp) {
    const int cnt = n_end - n0 < kWarp ? static_cast<int>(n_end - n0) : kWarp;
    const int64_t off = lane < cnt ? row_base(n0 + lane, sh.HW, sh.CO) + o * sh.HW : 0;
    argmax_warp_batch<T, kStreams>(st, lane, cnt, off, sh.CI_g,
                                   [&](int, int32_t i, bool is_neg, T v) { dst[i] += is_neg ? v : -v; });
  }
}

// Number of streaming multiprocessors of `device` (for choosing split-K factors).
inline int sm_count(c10::DeviceIndex device) {
  int v = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device));
  return std::max(v, 1);
}

// Splits [0, N) into S slices of `chunk` (a multiple of kBK) indices each, aiming at `want` slices
// but keeping at least `min_per_slice` indices per slice and S * E workspace elements at most
// kMaxWorkspace. Returns {S, chunk} with S >= 1 and S * chunk >= N.
struct Split {
  int64_t S, chunk;
};
inline Split choose_split(int64_t N, int64_t want, int64_t min_per_slice, int64_t E) {
  constexpr int64_t kMaxWorkspace = int64_t{1} << 23;  // elements (32 MiB float, 64 MiB double)
  int64_t S = std::max<int64_t>(want, 1);
  S = std::min<int64_t>(S, (N + min_per_slice - 1) / std::max<int64_t>(min_per_slice, 1));
  if (E > 0) S = std::min<int64_t>(S, kMaxWorkspace / E);
  S = std::max<int64_t>(S, 1);
  int64_t chunk = (N + S - 1) / S;
  chunk = std::max<int64_t>((chunk + kBK - 1) / kBK * kBK, kBK);
  S = std::max<int64_t>((N + chunk - 1) / chunk, 1);
  return {S, chunk};
}

// Runs the two argmax-scatter kernels for up to two streams. grad_in outputs (pos/neg pointers of the
// streams) must be zero-initialised (B, CI, HW) tensors; grad_w (CO, CI_g) is written (not
// accumulated) when non-null.
template <typename T>
void launch_argmax_scatter(const ArgStream<T>& s0, const ArgStream<T>& s1, int streams, const ArgShape& sh,
                           bool want_input, T* grad_w, const at::TensorOptions& opts, cudaStream_t stream) {
  TORCH_INTERNAL_ASSERT(streams == 1 || streams == 2);
  if (want_input && sh.N > 0 && sh.CI_g > 0 && sh.CO_g > 0) {
    const int64_t warps = sh.N * sh.G;
    const int64_t blocks = (warps * kWarp + kThreads - 1) / kThreads;
    TORCH_CHECK(blocks <= INT32_MAX, "certcore: problem too large for one CUDA grid");
    if (streams == 1) {
      argmax_scatter_input_kernel<T, 1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s0, s1, sh);
    } else {
      argmax_scatter_input_kernel<T, 2><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s0, s1, sh);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (grad_w != nullptr) {
    const int64_t E = sh.CO * sh.CI_g;
    if (E == 0) return;
    // Enough warps to fill the GPU (64 resident warps per SM), each slice at least 256 indices n.
    const int64_t want_warps = int64_t{64} * sm_count(c10::cuda::current_device());
    const Split sp = choose_split(sh.N, (want_warps + sh.CO - 1) / std::max<int64_t>(sh.CO, 1), 256, E);
    at::Tensor ws;
    T* dst = grad_w;
    if (sp.S > 1) {
      ws = at::zeros({sp.S, sh.CO, sh.CI_g}, opts);
      dst = ws.data_ptr<T>();
    } else {
      C10_CUDA_CHECK(cudaMemsetAsync(grad_w, 0, E * sizeof(T), stream));
    }
    if (sh.N > 0) {
      const int64_t blocks = (sh.CO * sp.S * kWarp + kThreads - 1) / kThreads;
      TORCH_CHECK(blocks <= INT32_MAX, "certcore: problem too large for one CUDA grid");
      if (streams == 1) {
        argmax_scatter_weight_kernel<T, 1>
            <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s0, s1, sh, sp.chunk, sp.S, dst);
      } else {
        argmax_scatter_weight_kernel<T, 2>
            <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s0, s1, sh, sp.chunk, sp.S, dst);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (sp.S > 1) launch_sum_slices<T>(dst, sp.S, E, grad_w, stream);
  }
}

// ---------------------------------------------------------------------------------------------
// Host-side argument checks (the Python layer validates semantics; these guard memory safety).
// ---------------------------------------------------------------------------------------------
inline void check_cuda_tensor(const at::Tensor& t, const char* name, c10::Device device, int64_t dim) {
  TORCH_CHECK(t.defined(), "certcore: ", name, " is undefined");
  TORCH_CHECK(t.is_cuda(), "certcore: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == device, "certcore: ", name, " is on ", t.device(), ", expected ", device);
  TORCH_CHECK(t.dim() == dim, "certcore: ", name, " must have ", dim, " dimensions, got ", t.dim());
  TORCH_CHECK(t.is_contiguous(), "certcore: ", name, " must be contiguous");
}

inline void check_float_tensor(const at::Tensor& t, const char* name, c10::Device device, int64_t dim,
                               at::ScalarType dtype) {
  check_cuda_tensor(t, name, device, dim);
  TORCH_CHECK(t.scalar_type() == dtype, "certcore: ", name, " has dtype ", t.scalar_type(), ", expected ", dtype);
}

// The leading tensor of an op, whose device and dtype the other arguments must share: a defined CUDA
// tensor of dtype float32 or float64, then check_float_tensor(t, name, t.device(), dim, dtype). `op`
// prefixes the first two messages (e.g. "certcore.norm_dist (CUDA)"). Returns the dtype.
inline at::ScalarType check_leading_float_tensor(const at::Tensor& t, const char* op, const char* name, int64_t dim) {
  TORCH_CHECK(t.defined() && t.is_cuda(), op, ": ", name, " must be a CUDA tensor");
  const at::ScalarType dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, op, ": ", name, " must be float32 or float64, got ", dt);
  check_float_tensor(t, name, t.device(), dim, dt);
  return dt;
}

inline void check_int32_tensor(const at::Tensor& t, const char* name, c10::Device device) {
  check_cuda_tensor(t, name, device, 3);
  TORCH_CHECK(t.scalar_type() == at::kInt, "certcore: ", name, " must be int32, got ", t.scalar_type());
}

inline void check_fits_int(int64_t v, const char* name) {
  TORCH_CHECK(v >= 0 && v <= INT32_MAX, "certcore: ", name, " = ", v, " does not fit the CUDA kernels' int range");
}

inline unsigned grid_of(int64_t blocks) {
  TORCH_CHECK(blocks <= INT32_MAX, "certcore: problem too large for one CUDA grid (", blocks, " blocks)");
  return static_cast<unsigned>(blocks);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace certcore::cuda
