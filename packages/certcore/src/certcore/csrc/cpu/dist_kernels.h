// Plain C++ interface between the torch-facing CPU ops (norm_dist.cpp, bound_inf_dist.cpp) and the
// SIMD tile kernels (dist_simd.h, compiled once per instruction set in dist_kernels_<isa>.cpp).
//
// The torch-facing side packs each group into row-major matrices with zero padding:
//   X: (Mp, Kp) rows r = b*HW + s of x[b, g*K:(g+1)*K, s]   (M = B*HW real rows, Mp = round_up(M, kRowPad))
//   W: (Np, Kp) rows of w[g*N:(g+1)*N, :]                    (N = CO/groups real rows, Np = round_up(N, kColPad))
// with Kp = round_up(K, L), L the lanes of a vector of the instruction set, and the reduction
// index stored "lane-major": with KL = Kp / L, input channel k sits at packed position
//   q = (k % KL) * L + k / KL,
// so lane j of every vector holds the contiguous chunk k in [j*KL, (j+1)*KL). Sums and maxima do not
// care about the order; the argmax does: the first lane whose running max equals the final max
// names the chunk that holds the first index reaching it, and only that chunk is searched.
// Zero padding never changes a result: |0 - 0| = 0 adds nothing to a max of absolute values or to
// a sum of powers. A tile is rows [m0, m1) x columns [n0, n1), multiples of kRowPad / kColPad.
// Nothing here includes torch; nothing here is shared between instruction sets except these PODs.
#pragma once

#include <cstdint>

namespace certcore::cpu {

constexpr int64_t kRowPad = 4;   // every kernel's row block divides this
constexpr int64_t kColPad = 12;  // every kernel's column block divides this
constexpr int64_t kMaxTileRows = 64;
constexpr int64_t kMaxTileCols = 96;

enum class PMode : int32_t { Inf = 0, Int = 1, General = 2 };

template <typename T>
struct FwdArgs {
  const T* x;  // (Mp, Kp)
  const T* w;  // (Np, Kp)
  int64_t K, Kp, M, N;
  PMode mode;
  int32_t ip;  // p as an integer when mode == Int (1..8)
  double p;
  const uint8_t* xbad;  // (Mp) 1 where the row holds a NaN or an infinity (exact scalar path)
  const uint8_t* wbad;  // (Np)
  T* y;                 // output element (r, c) at y[(r / HW) * y_bstride + r % HW + c * HW]
  int32_t* arg;         // same layout as y; nullptr when no argmax is wanted (only mode == Inf)
  int64_t HW, y_bstride;
  // With arg: the same rows in the original channel order (row r at xo + r * ldxo, k contiguous),
  // where the chunk found through the lane-major maxima is searched with whole vectors.
  const T* xo;
  int64_t ldxo;
  const T* wo;
  int64_t ldwo;
};

template <typename T>
struct BwdArgs {
  const T* x;   // (Mp, Kp)
  const T* w;   // (Np, Kp)
  const T* g;   // (Mp, Np) grad_y, zero in the padding
  const T* ry;  // (Mp, Np) 1 / y, or 0 where y == 0 (the gradient is defined as 0 there)
  int64_t K, Kp, Np;
  PMode mode;  // Int or General (p = inf is a scatter done by the caller)
  int32_t ip;
  double p;
  T* gx;  // (Mp, Kp): += dL/dx, or nullptr
  T* gw;  // (Np, Kp): += dL/dw, or nullptr
};

template <typename T>
struct BoundArgs {
  const T* l;  // (Mp, Kp)
  const T* u;  // (Mp, Kp)
  const T* w;  // (Np, Kp)
  int64_t K, Kp, M, N;
  T* yl;  // outputs, same layout as FwdArgs::y
  T* yu;
  int32_t* al;
  int32_t* au;
  int64_t HW, y_bstride;
  const T* lo;  // original channel order, as FwdArgs::xo
  const T* uo;
  int64_t ldxo;
  const T* wo;
  int64_t ldwo;
};

template <typename T>
using FwdTileFn = void (*)(const FwdArgs<T>&, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws);
template <typename T>
using BwdTileFn = void (*)(const BwdArgs<T>&, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
template <typename T>
using BoundTileFn = void (*)(const BoundArgs<T>&, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws);

// p = inf forward without argmax on the unpacked operands (AVX-512 only; finite operands only:
// VRANGEPS passes over a NaN, so the caller checks and otherwise takes the packed path):
//   c[m * ldc + n] = max_k |a[m * lda + k] - bt[k * ldb + n]|,  m < M, n < N, k < K (K >= 1).
// The vectors run along n, like a GEMM's: no packing, no horizontal reduction. Any M and N work;
// the caller splits the output in column blocks of kDirectCols (operand tiles of that width) and,
// for many rows, row blocks of about kDirectRows (best in multiples of kDirectRowBlock, the
// kernel's register block).
constexpr int64_t kDirectRows = 96;
constexpr int64_t kDirectRowBlock = 6;
constexpr int64_t kDirectCols = 128;
template <typename T>
struct InfDirectArgs {
  const T* a;
  int64_t lda;
  const T* bt;
  int64_t ldb;
  T* c;
  int64_t ldc;
  int64_t M, N, K;
};
template <typename T>
using InfDirectFn = void (*)(const InfDirectArgs<T>&);
// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols (the FC weights' tiles for inf_direct);
// returns whether every element was finite.
template <typename T>
using TransposeFn = bool (*)(const T* src, int64_t lds, int64_t rows, int64_t cols, T* dst, int64_t ldd);

// Workspace a forward or bound tile needs, in elements of T: four scalar states and two vector
// states per output of a tile, plus room to align the vectors to 64 bytes.
template <typename T>
constexpr int64_t tile_workspace() {
  return 4 * kMaxTileRows * kMaxTileCols + 2 * kMaxTileRows * kMaxTileCols * int64_t(64 / sizeof(T)) +
         int64_t(64 / sizeof(T));
}

struct KernelTable {
  const char* isa;
  int lanes_f32, lanes_f64;
  FwdTileFn<float> fwd_f32;
  FwdTileFn<double> fwd_f64;
  BwdTileFn<float> bwd_f32;
  BwdTileFn<double> bwd_f64;
  BoundTileFn<float> bound_f32;
  BoundTileFn<double> bound_f64;
  InfDirectFn<float> inf_direct_f32;  // these four: nullptr where the instruction set has none
  InfDirectFn<double> inf_direct_f64;
  TransposeFn<float> transpose_f32;
  TransposeFn<double> transpose_f64;

  template <typename T>
  int lanes() const;
  template <typename T>
  FwdTileFn<T> fwd() const;
  template <typename T>
  BwdTileFn<T> bwd() const;
  template <typename T>
  BoundTileFn<T> bound() const;
  template <typename T>
  InfDirectFn<T> inf_direct() const;
  template <typename T>
  TransposeFn<T> transpose() const;
};

template <> inline int KernelTable::lanes<float>() const { return lanes_f32; }
template <> inline int KernelTable::lanes<double>() const { return lanes_f64; }
template <> inline FwdTileFn<float> KernelTable::fwd<float>() const { return fwd_f32; }
template <> inline FwdTileFn<double> KernelTable::fwd<double>() const { return fwd_f64; }
template <> inline BwdTileFn<float> KernelTable::bwd<float>() const { return bwd_f32; }
template <> inline BwdTileFn<double> KernelTable::bwd<double>() const { return bwd_f64; }
template <> inline BoundTileFn<float> KernelTable::bound<float>() const { return bound_f32; }
template <> inline BoundTileFn<double> KernelTable::bound<double>() const { return bound_f64; }
template <> inline InfDirectFn<float> KernelTable::inf_direct<float>() const { return inf_direct_f32; }
template <> inline InfDirectFn<double> KernelTable::inf_direct<double>() const { return inf_direct_f64; }
template <> inline TransposeFn<float> KernelTable::transpose<float>() const { return transpose_f32; }
template <> inline TransposeFn<double> KernelTable::transpose<double>() const { return transpose_f64; }

// One table per instruction set; nullptr where this build or this CPU lacks it.
const KernelTable* kernels_avx512();
const KernelTable* kernels_avx2();
const KernelTable& kernels_generic();

// The table for this CPU: the widest supported instruction set, or the one named by the
// environment variable CERTCORE_CPU_ISA (avx512, avx2 or generic; read on every call so that tests
// can exercise each path). Falls back to a narrower set when the named one is not supported.
const KernelTable& kernels();

}  // namespace certcore::cpu
