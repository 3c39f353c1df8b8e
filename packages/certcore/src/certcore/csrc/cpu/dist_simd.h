// SIMD tile kernels of the L_p-distance ops, written once with GCC vector extensions and compiled
// once per instruction set by dist_kernels_<isa>.cpp, which defines before including this file:
//   CERTCORE_ISA_NS   namespace of this instantiation (avx512, avx2, generic)
//   CERTCORE_VBYTES   vector width in bytes (64, 32, 16)
//   CERTCORE_AVX512 / CERTCORE_AVX2   optional: use those intrinsics where they help
// and includes <cmath>, <cstdint>, <cstring>, <limits>, <immintrin.h> and dist_kernels.h before
// switching the target, so that no standard-library code is compiled for a wider instruction set.
// Everything lives in an anonymous namespace: no symbol is shared between instruction sets.
//
// Shape of every kernel (like a GEMM): a tile of rows (b, s) x columns (output channels) is
// computed in register blocks of R rows x C columns; the reduction over input channels runs over
// contiguous memory in both operands, KC elements at a time, so that a panel of C weight rows
// stays in L1 and the tile's rows stay in L2. Vector accumulators are reduced horizontally once
// per KC block.

#ifndef CERTCORE_ISA_NS
#error "define CERTCORE_ISA_NS and CERTCORE_VBYTES before including dist_simd.h"
#endif

namespace certcore::cpu::CERTCORE_ISA_NS {
namespace {

typedef float vf __attribute__((vector_size(CERTCORE_VBYTES)));
typedef double vd __attribute__((vector_size(CERTCORE_VBYTES)));
typedef int32_t vi32 __attribute__((vector_size(CERTCORE_VBYTES)));
typedef int64_t vi64 __attribute__((vector_size(CERTCORE_VBYTES)));

template <typename T>
struct VT;
template <>
struct VT<float> {
  using V = vf;
  using I = vi32;
  static constexpr int L = CERTCORE_VBYTES / 4;
  static constexpr int64_t KC = 256;  // reduction block, elements
};
template <>
struct VT<double> {
  using V = vd;
  using I = vi64;
  static constexpr int L = CERTCORE_VBYTES / 8;
  static constexpr int64_t KC = 512;
};

// Register blocks (rows x columns) per kernel; each R divides kRowPad and each C divides kColPad.
#if defined(CERTCORE_AVX512)
constexpr int kInfR = 4, kInfC = 6;  // 24 accumulators of 32 registers
constexpr int kIntR = 4, kIntC = 4;
constexpr int kGenR = 2, kGenC = 2;
constexpr int kBwdR = 4, kBwdC = 4;
constexpr int kBwdGenR = 2, kBwdGenC = 2;
constexpr int kBndR = 2, kBndC = 4;
#else
constexpr int kInfR = 2, kInfC = 4;  // 16 registers
constexpr int kIntR = 2, kIntC = 3;
constexpr int kGenR = 1, kGenC = 2;
constexpr int kBwdR = 2, kBwdC = 2;
constexpr int kBwdGenR = 1, kBwdGenC = 2;
constexpr int kBndR = 2, kBndC = 2;
#endif
static_assert(kRowPad % kInfR == 0 && kRowPad % kIntR == 0 && kRowPad % kGenR == 0 && kRowPad % kBwdR == 0 &&
              kRowPad % kBwdGenR == 0 && kRowPad % kBndR == 0);
static_assert(kColPad % kInfC == 0 && kColPad % kIntC == 0 && kColPad % kGenC == 0 && kColPad % kBwdC == 0 &&
              kColPad % kBwdGenC == 0 && kColPad % kBndC == 0);

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------------------------
// Vector helpers
template <typename T>
inline typename VT<T>::V vload(const T* p) {
  typename VT<T>::V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void vstore(T* p, typename VT<T>::V v) {
  __builtin_memcpy(p, &v, sizeof(v));
}
template <typename T>
inline typename VT<T>::V vset(T s) {
  return typename VT<T>::V{} + s;
}
inline vf vabs(vf v) { return (vf)((vi32)v & 0x7fffffff); }
inline vd vabs(vd v) { return (vd)((vi64)v & (int64_t)0x7fffffffffffffffLL); }
inline vf signbits(vf v) { return (vf)((vi32)v & (int32_t)0x80000000); }
inline vd signbits(vd v) { return (vd)((vi64)v & (int64_t)0x8000000000000000ULL); }
inline vf vor(vf a, vf b) { return (vf)((vi32)a | (vi32)b); }
inline vd vor(vd a, vd b) { return (vd)((vi64)a | (vi64)b); }
template <class V>
inline V vmax(V a, V b) {
  return a > b ? a : b;
}
template <class V>
inline V vmin(V a, V b) {
  return a < b ? a : b;
}

// max(acc, |t|) for acc >= 0. AVX-512DQ's VRANGEPS does it in one instruction (max of absolute
// values, sign cleared), so that the p = inf inner loop is one subtraction and one range per pair.
inline vf absmax(vf acc, vf t) {
#if defined(CERTCORE_AVX512)
  return (vf)_mm512_range_ps((__m512)acc, (__m512)t, 0x0B);
#else
  return vmax(acc, vabs(t));
#endif
}
inline vd absmax(vd acc, vd t) {
#if defined(CERTCORE_AVX512)
  return (vd)_mm512_range_pd((__m512d)acc, (__m512d)t, 0x0B);
#else
  return vmax(acc, vabs(t));
#endif
}

// Horizontal reductions and the equality mask (bit i set where a[i] == b[i]).
#if defined(CERTCORE_AVX512)
inline float hmax(vf v) { return _mm512_reduce_max_ps((__m512)v); }
inline double hmax(vd v) { return _mm512_reduce_max_pd((__m512d)v); }
inline float hmin(vf v) { return _mm512_reduce_min_ps((__m512)v); }
inline double hmin(vd v) { return _mm512_reduce_min_pd((__m512d)v); }
inline float hsum(vf v) { return _mm512_reduce_add_ps((__m512)v); }
inline double hsum(vd v) { return _mm512_reduce_add_pd((__m512d)v); }
inline uint64_t eq_mask(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_EQ_OQ); }
inline uint64_t eq_mask(vd a, vd b) { return _mm512_cmp_pd_mask((__m512d)a, (__m512d)b, _CMP_EQ_OQ); }
#else
template <class V>
inline auto hmax(V v) {
  auto m = v[0];
  for (int i = 1; i < int(sizeof(V) / sizeof(m)); ++i) m = v[i] > m ? v[i] : m;
  return m;
}
template <class V>
inline auto hmin(V v) {
  auto m = v[0];
  for (int i = 1; i < int(sizeof(V) / sizeof(m)); ++i) m = v[i] < m ? v[i] : m;
  return m;
}
template <class V>
inline auto hsum(V v) {
  auto s = v[0];
  for (int i = 1; i < int(sizeof(V) / sizeof(s)); ++i) s += v[i];
  return s;
}
template <class V>
inline uint64_t eq_mask(V a, V b) {
  const auto m = a == b;
  uint64_t r = 0;
  for (int i = 0; i < int(sizeof(V) / sizeof(a[0])); ++i) r |= uint64_t(m[i] != 0) << i;
  return r;
}
#endif

// Natural logarithm of positive finite floats (denormals included), Cephes' single-precision
// polynomial (about 1 ulp); 0 gives a large negative number, callers mask it.
inline vf vlog(vf x) {
  const vi32 small = x < 1.17549435e-38f;
  x = small ? x * 16777216.0f : x;  // 2^24: bring denormals into the normal range
  const vi32 xi = (vi32)x;
  const vi32 ei = ((xi >> 23) & 0xff) - 126 - (small & 24);
  vf m = (vf)((xi & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  vf e = __builtin_convertvector(ei, vf);
  const vi32 lt = m < 0.707106781186547524f;
  e = lt ? e - 1.0f : e;
  m = lt ? m + m - 1.0f : m - 1.0f;
  const vf z = m * m;
  vf y = vset(7.0376836292E-2f);
  y = y * m - 1.1514610310E-1f;
  y = y * m + 1.1676998740E-1f;
  y = y * m - 1.2420140846E-1f;
  y = y * m + 1.4249322787E-1f;
  y = y * m - 1.6668057665E-1f;
  y = y * m + 2.0000714765E-1f;
  y = y * m - 2.4999993993E-1f;
  y = y * m + 3.3333331174E-1f;
  y = y * m * z;
  y = y + e * -2.12194440e-4f;
  y = y - 0.5f * z;
  vf r = m + y;
  return r + e * 0.693359375f;
}

// e^x, Cephes' single-precision polynomial (about 1 ulp); 0 below -87.3, clamped above 88.37.
inline vf vexp(vf x) {
  const vi32 under = x < -87.3365f;
  x = vmin(x, vset(88.3762626647949f));
  x = vmax(x, vset(-87.3365f));
  const vf fx0 = x * 1.44269504088896341f + 0.5f;
  const vf tr = __builtin_convertvector(__builtin_convertvector(fx0, vi32), vf);
  const vf fx = tr > fx0 ? tr - 1.0f : tr;  // floor
  x = x - fx * 0.693359375f;
  x = x - fx * -2.12194440e-4f;
  const vf z = x * x;
  vf y = vset(1.9875691500E-4f);
  y = y * x + 1.3981999507E-3f;
  y = y * x + 8.3334519073E-3f;
  y = y * x + 4.1665795894E-2f;
  y = y * x + 1.6666665459E-1f;
  y = y * x + 5.0000001201E-1f;
  y = y * z + x + 1.0f;
  const vi32 n = (__builtin_convertvector(fx, vi32) + 127) << 23;
  y = y * (vf)n;
  return under ? vset(0.0f) : y;
}

// v^q for v >= 0 (v == 0 gives exactly 0, whatever the sign of q; NaN stays NaN).
#if defined(CERTCORE_AVX512)
// 2^(q log2 v) with AVX-512's exact exponent/mantissa split (VGETEXPPS, VGETMANTPS to [0.75, 1.5))
// and VSCALEFPS (which under- and overflows gracefully): polynomials of degree 8 for log2(1+u)/u on
// [-0.25, 0.5) and 6 for 2^f on [-0.5, 0.5], least-squares fits on Chebyshev nodes with an error
// of about 1 ulp in float32 (log2: 9e-8 absolute; 2^f: 1e-7 relative). About half the
// instructions of the Cephes route below.
inline vf pow_nonneg(vf v, float q) {
  const __m512 x = (__m512)v, one = _mm512_set1_ps(1.0f);
  const __mmask16 nonzero = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  __m512 e = _mm512_getexp_ps(x);
  const __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_zero);
  e = _mm512_mask_add_ps(e, _mm512_cmp_ps_mask(m, one, _CMP_LT_OQ), e, one);
  const __m512 u = _mm512_sub_ps(m, one);
  __m512 pl = _mm512_set1_ps(0.07827980071306229f);
  pl = _mm512_fmadd_ps(pl, u, _mm512_set1_ps(-0.174443781375885f));
  pl = _mm512_fmadd_ps(pl, u, _mm512_set1_ps(0.21635855734348297f));
  pl = _mm512_fmadd_ps(pl, u, _mm512_set1_ps(-0.24270190298557281f));
  pl = _mm512_fmadd_ps(pl, u, _mm512_set1_ps(0.28818631172180176f));
  pl = _mm512_fmadd_ps(pl, u, _mm512_set1_ps(-0.3605765700340271f));
  pl = _mm512_fmadd_ps(pl, u, _mm512_set1_ps(0.48090222477912903f));
  pl = _mm512_fmadd_ps(pl, u, _mm512_set1_ps(-0.7213484644889832f));
  pl = _mm512_fmadd_ps(pl, u, _mm512_set1_ps(1.4426950216293335f));
  const __m512 z = _mm512_mul_ps(_mm512_fmadd_ps(u, pl, e), _mm512_set1_ps(q));  // q log2(v)
  const __m512 n = _mm512_roundscale_ps(z, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(z, n);
  __m512 pe = _mm512_set1_ps(0.00015469732170458883f);
  pe = _mm512_fmadd_ps(pe, f, _mm512_set1_ps(0.0013400432653725147f));
  pe = _mm512_fmadd_ps(pe, f, _mm512_set1_ps(0.00961802527308464f));
  pe = _mm512_fmadd_ps(pe, f, _mm512_set1_ps(0.05550327152013779f));
  pe = _mm512_fmadd_ps(pe, f, _mm512_set1_ps(0.24022650718688965f));
  pe = _mm512_fmadd_ps(pe, f, _mm512_set1_ps(0.6931471824645996f));
  pe = _mm512_fmadd_ps(pe, f, one);
  return (vf)_mm512_maskz_mov_ps(nonzero, _mm512_scalef_ps(pe, n));
}
#else
inline vf pow_nonneg(vf v, float q) {
  const vf r = vexp(vlog(v) * q);
  return v != v ? v : (v > 0.0f ? r : vset(0.0f));
}
#endif
inline vd pow_nonneg(vd v, double q) {
  // Double precision: the accuracy of libm matters more than speed here (float64 is for checks).
  vd r = v;  // every lane is set below
  for (int i = 0; i < VT<double>::L; ++i) r[i] = v[i] > 0 ? std::exp(q * std::log(v[i])) : (v[i] != v[i] ? v[i] : 0.0);
  return r;
}

// |t|^IP by repeated multiplication (FMA-friendly: the caller adds it to an accumulator).
template <int IP, class V>
inline V ipow_abs(V t) {
  if constexpr (IP == 1) {
    return vabs(t);
  } else if constexpr (IP == 2) {
    return t * t;
  } else if constexpr (IP == 3) {
    return t * t * vabs(t);
  } else if constexpr (IP == 4) {
    const V t2 = t * t;
    return t2 * t2;
  } else if constexpr (IP == 5) {
    const V t2 = t * t;
    return t2 * t2 * vabs(t);
  } else if constexpr (IP == 6) {
    const V t2 = t * t;
    return t2 * t2 * t2;
  } else if constexpr (IP == 7) {
    const V t2 = t * t;
    const V t4 = t2 * t2;
    return t4 * t2 * vabs(t);
  } else {
    static_assert(IP == 8);
    const V t2 = t * t;
    const V t4 = t2 * t2;
    return t4 * t4;
  }
}

// sign(u) |u|^Q (Q = p - 1 of an integer p) by repeated multiplication; sign(0) = 0.
template <int Q, class V>
inline V signed_ipow(V u) {
  using E = decltype(u[0] + 0);
  if constexpr (Q == 0) {
    return (u > E(0) ? vset<E>(1) : vset<E>(0)) - (u < E(0) ? vset<E>(1) : vset<E>(0));
  } else if constexpr (Q == 1) {
    return u;
  } else if constexpr (Q == 2) {
    return u * vabs(u);
  } else if constexpr (Q == 3) {
    return u * u * u;
  } else if constexpr (Q == 4) {
    return u * vabs(u) * (u * u);
  } else if constexpr (Q == 5) {
    const V u2 = u * u;
    return u * (u2 * u2);
  } else if constexpr (Q == 6) {
    const V u2 = u * u;
    return u * vabs(u) * (u2 * u2);
  } else {
    static_assert(Q == 7);
    const V u2 = u * u;
    return u * u2 * (u2 * u2);
  }
}

// s^(1/p) for s >= 0 (inf stays inf, NaN stays NaN); ip = p when p is a small integer, else 0.
template <typename T>
inline T root_scalar(T s, int32_t ip, double inv_p) {
  if (s != s) return s;
  if (s <= T(0)) return T(0);
  switch (ip) {
    case 1: return s;
    case 2: return std::sqrt(s);
    case 4: return std::sqrt(std::sqrt(s));
    case 8: return std::sqrt(std::sqrt(std::sqrt(s)));
    default: return T(std::pow(double(s), inv_p));
  }
}

// ---------------------------------------------------------------------------------------------
// Exact scalar path: NaN-propagating, overflow-safe (two passes, the sum in wider precision).
// Used for rows or columns that hold a NaN or an infinity, and for the rare outputs whose
// fast-path sum over- or underflowed. Also fills the argmax (first index of the max, or of the
// first NaN) when arg != nullptr. Reads the lane-major packed rows in the original order k.
template <typename T>
T scalar_dist(const T* x, const T* w, int64_t K, int64_t KL, PMode mode, double p, int32_t* arg) {
  constexpr int L = VT<T>::L;
  T m = 0;
  int64_t im = 0, inan = -1;
  for (int64_t j = 0, k = 0; j < L && k < K; ++j) {
    for (int64_t kv = 0; kv < KL && k < K; ++kv, ++k) {
      const int64_t q = kv * L + j;
      const T t = x[q] - w[q];
      const T a = t < 0 ? -t : t;
      if (a != a) {
        if (inan < 0) inan = q;
      } else if (a > m) {
        m = a;
        im = q;
      }
    }
  }
  auto orig = [&](int64_t q) { return int32_t((q % L) * KL + q / L); };
  if (inan >= 0) {
    if (arg) *arg = (x[inan] - w[inan] >= 0) ? orig(inan) : ~orig(inan);
    return std::numeric_limits<T>::quiet_NaN();
  }
  if (arg) *arg = (x[im] - w[im] >= 0) ? orig(im) : ~orig(im);
  if (mode == PMode::Inf || m == 0 || m == std::numeric_limits<T>::infinity()) return m;
  using A = long double;
  const A ma = m, pa = p;
  A s = 0;
  for (int64_t j = 0, k = 0; j < L && k < K; ++j) {
    for (int64_t kv = 0; kv < KL && k < K; ++kv, ++k) {
      const int64_t q = kv * L + j;
      const T t = x[q] - w[q];
      const A v = A(t < 0 ? -t : t) / ma;
      if (v > 0) s += std::pow(v, pa);
    }
  }
  return T(ma * std::pow(s, A(1) / pa));
}

// First k in [k0, k1) with f(k) == target, scanning whole vectors (vf(k) = f at k..k+L-1) of
// original-order rows; -1 if none.
template <typename T, class F, class VF>
inline int64_t first_match(int64_t k0, int64_t k1, T target, const F& f, const VF& vf) {
  constexpr int L = VT<T>::L;
  constexpr int G = 64 / L;  // vectors whose masks fit one 64-bit word: no branch inside a group
  const typename VT<T>::V tv = vset(target);
  int64_t k = k0;
  for (; k + G * L <= k1; k += G * L) {
    uint64_t m = 0;
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) m |= eq_mask(vf(k + g * L), tv) << (g * L);
    if (m) return k + __builtin_ctzll(m);
  }
  for (; k + L <= k1; k += L) {
    const uint64_t m = eq_mask(vf(k), tv);
    if (m) return k + __builtin_ctzll(m);
  }
  for (; k < k1; ++k)
    if (f(k) == target) return k;
  return -1;
}

// First original index k < K with f(k) == target (-1 if none). Lane j of a lane-major state holds
// the extreme over the original indices [j*KL, (j+1)*KL), so only the chunks of the lanes equal to
// target are searched, in order: the first one holding a match holds the first index.
template <typename T, class F, class VF>
inline int64_t first_reaching(typename VT<T>::V state, T target, int64_t KL, int64_t K, const F& f, const VF& vf) {
  uint64_t lanes = eq_mask(state, vset(target));
  while (lanes) {
    const int64_t j = __builtin_ctzll(lanes);
    lanes &= lanes - 1;
    const int64_t k = first_match<T>(j * KL, imin(K, (j + 1) * KL), target, f, vf);
    if (k >= 0) return k;
  }
  return -1;
}

// Bring rows [r0, r1) of an original-order matrix (row r at base + r * ld, n elements) into the
// cache with sequential prefetches, before the argmax searches read them at random offsets.
template <typename T>
inline void prefetch_rows(const T* base, int64_t ld, int64_t r0, int64_t r1, int64_t n) {
  constexpr int64_t step = 64 / sizeof(T);
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t k = 0; k < n; k += step) __builtin_prefetch(base + r * ld + k, 0, 2);
}

template <typename T>
inline T* align64(T* p) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// ---------------------------------------------------------------------------------------------
// Forward: register-blocked reduction over one KC block.
template <typename T, int R, int C, class Step>
inline void micro_fwd(const T* __restrict x, const T* __restrict w, int64_t ld, int64_t nv, const Step& step,
                      typename VT<T>::V (&acc)[R][C]) {
  using V = typename VT<T>::V;
  constexpr int L = VT<T>::L;
  for (int64_t kv = 0; kv < nv; ++kv) {
    V xr[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) xr[r] = vload(x + r * ld + kv * L);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const V wc = vload(w + c * ld + kv * L);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][c] = step(acc[r][c], xr[r] - wc, r, c);
    }
  }
}

// One pass over a tile: st[(r - m0) * nn + (c - n0)] = combine(st, vector accumulator over a KC
// block), the state starting at zero (written, not read, in the first block); the state S is a
// scalar (reduced horizontally) or a vector (per-lane maxima). make_step(r0, c0) returns the step
// functor of the register block at (r0, c0).
template <typename T, int R, int C, typename S, class MakeStep, class Combine>
void tile_pass(const T* x, const T* w, int64_t Kp, int64_t m0, int64_t m1, int64_t n0, int64_t n1, S* st,
               const MakeStep& make_step, const Combine& combine) {
  using V = typename VT<T>::V;
  constexpr int L = VT<T>::L;
  constexpr int64_t KC = VT<T>::KC;
  const int64_t nn = n1 - n0;
  for (int64_t k0 = 0; k0 < Kp; k0 += KC) {
    const int64_t nv = imin(KC, Kp - k0) / L;
    for (int64_t c0 = n0; c0 < n1; c0 += C) {
      for (int64_t r0 = m0; r0 < m1; r0 += R) {
        V acc[R][C];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
          for (int c = 0; c < C; ++c) acc[r][c] = V{};
        const auto step = make_step(r0, c0);
        micro_fwd<T, R, C>(x + r0 * Kp + k0, w + c0 * Kp + k0, Kp, nv, step, acc);
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < C; ++c) {
            S& s = st[(r0 - m0 + r) * nn + (c0 - n0 + c)];
            s = combine(k0 == 0 ? S{} : s, acc[r][c]);
          }
      }
    }
  }
}

template <typename T>
struct InfStep {
  using V = typename VT<T>::V;
  V operator()(V acc, V t, int, int) const { return absmax(acc, t); }
};
template <typename T, int IP>
struct IntStep {
  using V = typename VT<T>::V;
  V operator()(V acc, V t, int, int) const { return acc + ipow_abs<IP>(t); }
};
// sum (|t| / m)^IP with the per-output max m known (overflow-safe integer power)
template <typename T, int IP, int R, int C>
struct IntScaledStep {
  using V = typename VT<T>::V;
  V rm[R][C];
  V operator()(V acc, V t, int r, int c) const { return acc + ipow_abs<IP>(t * rm[r][c]); }
};
// sum (|t| / m)^p, general p
template <typename T, int R, int C>
struct GenStep {
  using V = typename VT<T>::V;
  V rm[R][C];
  T p;
  V operator()(V acc, V t, int r, int c) const { return acc + pow_nonneg(vabs(t) * rm[r][c], p); }
};

template <typename T>
inline T max_combine(T s, typename VT<T>::V a) {
  const T h = hmax(a);
  return h > s ? h : s;
}
template <typename T>
inline T sum_combine(T s, typename VT<T>::V a) {
  return s + hsum(a);
}
template <class V>
inline V vmax_combine(V s, V a) {
  return vmax(s, a);
}

template <typename T>
inline T safe_reciprocal(T m) {
  // 1/m where it is finite and m a normal positive number; else 0 (the caller takes the exact path)
  if (!(m >= std::numeric_limits<T>::min()) || m == std::numeric_limits<T>::infinity()) return T(0);
  const T r = T(1) / m;
  return r == std::numeric_limits<T>::infinity() ? T(0) : r;
}

template <typename T, int R, int C, class Step>
inline auto scaled_maker(const T* rinv, int64_t m0, int64_t n0, int64_t nn, double p) {
  return [=](int64_t r0, int64_t c0) {
    Step s;
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) s.rm[r][c] = vset(rinv[(r0 - m0 + r) * nn + (c0 - n0 + c)]);
    if constexpr (requires { s.p; }) s.p = T(p);
    return s;
  };
}

// body(r, c, tile index, output offset, bad) over the real outputs of a tile, in the order that
// writes y contiguously: columns innermost for FC (HW == 1, y[b, c]), rows innermost for conv
// (HW > 1: consecutive rows are consecutive positions s of y[b, c, s]).
template <typename T, class Body>
inline void for_each_output(const FwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Body& body) {
  const int64_t nn = n1 - n0, re = imin(m1, a.M), ce = imin(n1, a.N);
  if (a.HW == 1) {
    for (int64_t r = m0; r < re; ++r) {
      const int64_t ybase = r * a.y_bstride;
      const bool xbad = a.xbad[r] != 0;
      for (int64_t c = n0; c < ce; ++c) body(r, c, (r - m0) * nn + (c - n0), ybase + c, xbad || a.wbad[c] != 0);
    }
    return;
  }
  for (int64_t c = n0; c < ce; ++c) {
    const bool wbad = a.wbad[c] != 0;
    int64_t b = m0 / a.HW, s = m0 % a.HW;
    for (int64_t r = m0; r < re; ++r) {
      body(r, c, (r - m0) * nn + (c - n0), b * a.y_bstride + s + c * a.HW, wbad || a.xbad[r] != 0);
      if (++s == a.HW) {
        s = 0;
        ++b;
      }
    }
  }
}

// y of output (r, c) by the exact scalar path (rows or columns holding a NaN or an infinity, sums
// that over- or underflowed); with arg, also its argmax code.
template <typename T>
inline T exact_output(const FwdArgs<T>& a, int64_t r, int64_t c, PMode mode, int32_t* arg = nullptr) {
  return scalar_dist(a.x + r * a.Kp, a.w + c * a.Kp, a.K, a.Kp / VT<T>::L, mode, a.p, arg);
}

template <typename T>
void fwd_inf(const FwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws) {
  using V = typename VT<T>::V;
  const int64_t KL = a.Kp / VT<T>::L;
  auto inf_step = [](int64_t, int64_t) { return InfStep<T>{}; };
  // Per-lane maxima across the KC blocks (one vector max per output and block; a horizontal
  // reduction per block would cost several times that), reduced once at the end.
  V* sv = reinterpret_cast<V*>(align64(ws));
  tile_pass<T, kInfR, kInfC>(a.x, a.w, a.Kp, m0, m1, n0, n1, sv, inf_step, vmax_combine<V>);
  if (!a.arg) {  // no-grad: no argmax search
    for_each_output(a, m0, m1, n0, n1, [&](int64_t r, int64_t c, int64_t i, int64_t o, bool bad) {
      a.y[o] = bad ? exact_output(a, r, c, PMode::Inf) : hmax(sv[i]);
    });
    return;
  }
  auto absdiff = [](T xv, T wv) {
    const T t = xv - wv;
    return t < 0 ? -t : t;
  };
  auto vabsdiff = [](V xv, V wv) { return vabs(xv - wv); };
  prefetch_rows(a.xo, a.ldxo, m0, imin(m1, a.M), a.K);
  prefetch_rows(a.wo, a.ldwo, n0, imin(n1, a.N), a.K);
  for_each_output(a, m0, m1, n0, n1, [&](int64_t r, int64_t c, int64_t i, int64_t o, bool bad) {
    int32_t arg = 0;
    if (!bad) {
      const T* xo = a.xo + r * a.ldxo;
      const T* wo = a.wo + c * a.ldwo;
      const T y = hmax(sv[i]);
      const int64_t k = first_reaching<T>(
          sv[i], y, KL, a.K, [&](int64_t k) { return absdiff(xo[k], wo[k]); },
          [&](int64_t k) { return vabsdiff(vload(xo + k), vload(wo + k)); });
      if (k >= 0) {
        a.y[o] = y;
        a.arg[o] = (xo[k] - wo[k] >= 0) ? int32_t(k) : ~int32_t(k);
        return;
      }
    }
    a.y[o] = exact_output(a, r, c, PMode::Inf, &arg);
    a.arg[o] = arg;
  });
}

// The max m of |t| per output (mx), rinv = 1/m (0 where the exact path must take over) and the
// rescaled sums ss = sum (|t| / m)^p (Step: integer or general p) of a tile.
template <typename T, int R, int C, class Step>
void max_and_rescaled_sums(const FwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* mx, T* rinv,
                           T* ss) {
  const int64_t nn = n1 - n0, tile = (m1 - m0) * nn;
  tile_pass<T, kInfR, kInfC>(a.x, a.w, a.Kp, m0, m1, n0, n1, mx, [](int64_t, int64_t) { return InfStep<T>{}; },
                             max_combine<T>);
  for (int64_t i = 0; i < tile; ++i) rinv[i] = safe_reciprocal(mx[i]);
  tile_pass<T, R, C>(a.x, a.w, a.Kp, m0, m1, n0, n1, ss, scaled_maker<T, R, C, Step>(rinv, m0, n0, nn, a.p),
                     sum_combine<T>);
}

// y = m * ss^(1/p) from max_and_rescaled_sums (0 where m == 0), else the exact path.
template <typename T>
inline T rescaled_output(const FwdArgs<T>& a, int64_t r, int64_t c, bool bad, T m, T rinv, T ss, PMode mode,
                         int32_t ip, double inv_p) {
  if (!bad && m == T(0)) return T(0);
  if (!bad && rinv != T(0)) return m * root_scalar(ss, ip, inv_p);
  return exact_output(a, r, c, mode);
}

// Integer p: plain sum of |t|^p (no rescaling: fastest), then a rescaled recomputation of the tile
// when an output's sum over- or underflowed (|t| beyond ~1e4 or below ~1e-4 for p = 8 in float32).
template <typename T, int IP>
void fwd_int(const FwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws) {
  const int64_t tile = (m1 - m0) * (n1 - n0);
  T* st = ws;
  tile_pass<T, kIntR, kIntC>(a.x, a.w, a.Kp, m0, m1, n0, n1, st, [](int64_t, int64_t) { return IntStep<T, IP>{}; },
                             sum_combine<T>);
  // A sum is trusted when terms that underflowed cannot matter (sum >= K * min / eps) and it is finite.
  const T lo = T(a.K) * std::numeric_limits<T>::min() / std::numeric_limits<T>::epsilon();
  const T hi = std::numeric_limits<T>::max();
  auto trusted = [&](T s) { return s >= lo && s <= hi; };  // false for 0: x == w, or all terms underflowed
  bool need_fix = false;
  for_each_output(a, m0, m1, n0, n1,
                  [&](int64_t, int64_t, int64_t i, int64_t, bool bad) { need_fix |= !bad && !trusted(st[i]); });
  const double inv_p = 1.0 / double(IP);
  if (!need_fix) {
    for_each_output(a, m0, m1, n0, n1, [&](int64_t r, int64_t c, int64_t i, int64_t o, bool bad) {
      a.y[o] = bad ? exact_output(a, r, c, PMode::Int) : root_scalar(st[i], IP, inv_p);
    });
    return;
  }
  // Rare: the max m of each output, then sum (|t|/m)^p, and pick per output.
  T* mx = ws + tile;
  T* rinv = ws + 2 * tile;
  T* ss = ws + 3 * tile;
  max_and_rescaled_sums<T, kIntR, kIntC, IntScaledStep<T, IP, kIntR, kIntC>>(a, m0, m1, n0, n1, mx, rinv, ss);
  for_each_output(a, m0, m1, n0, n1, [&](int64_t r, int64_t c, int64_t i, int64_t o, bool bad) {
    a.y[o] = (!bad && trusted(st[i])) ? root_scalar(st[i], IP, inv_p)
                                      : rescaled_output(a, r, c, bad, mx[i], rinv[i], ss[i], PMode::Int, IP, inv_p);
  });
}

// General p: the max m of |t| first (cheap), then sum (|t|/m)^p, y = m * sum^(1/p): finite and
// accurate for any p (1000 included) without a running rescale in the inner loop.
template <typename T>
void fwd_general(const FwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws) {
  const int64_t tile = (m1 - m0) * (n1 - n0);
  T* mx = ws;
  T* rinv = ws + tile;
  T* ss = ws + 2 * tile;
  max_and_rescaled_sums<T, kGenR, kGenC, GenStep<T, kGenR, kGenC>>(a, m0, m1, n0, n1, mx, rinv, ss);
  const double inv_p = 1.0 / a.p;
  for_each_output(a, m0, m1, n0, n1, [&](int64_t r, int64_t c, int64_t i, int64_t o, bool bad) {
    a.y[o] = rescaled_output(a, r, c, bad, mx[i], rinv[i], ss[i], PMode::General, 0, inv_p);
  });
}

template <typename T>
void fwd_tile(const FwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws) {
  switch (a.mode) {
    case PMode::Inf: return fwd_inf(a, m0, m1, n0, n1, ws);
    case PMode::General: return fwd_general(a, m0, m1, n0, n1, ws);
    case PMode::Int:
      switch (a.ip) {
        case 1: return fwd_int<T, 1>(a, m0, m1, n0, n1, ws);
        case 2: return fwd_int<T, 2>(a, m0, m1, n0, n1, ws);
        case 3: return fwd_int<T, 3>(a, m0, m1, n0, n1, ws);
        case 4: return fwd_int<T, 4>(a, m0, m1, n0, n1, ws);
        case 5: return fwd_int<T, 5>(a, m0, m1, n0, n1, ws);
        case 6: return fwd_int<T, 6>(a, m0, m1, n0, n1, ws);
        case 7: return fwd_int<T, 7>(a, m0, m1, n0, n1, ws);
        case 8: return fwd_int<T, 8>(a, m0, m1, n0, n1, ws);
        default: return fwd_general(a, m0, m1, n0, n1, ws);
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward (finite p): term(r, c, k) = sign(t) (|t| / y)^(p-1), t = x[r,k] - w[c,k];
// gx[r, k] += sum_c g[r,c] term, gw[c, k] -= sum_r g[r,c] term, both in one pass over the block.
template <typename T, int R, int C, bool GX, bool GW, class Term>
inline void micro_bwd(const T* __restrict x, const T* __restrict w, int64_t ld, int64_t nv, const T* g,
                      const T* ry, int64_t ldg, T* __restrict gx, T* __restrict gw, const Term& term) {
  using V = typename VT<T>::V;
  constexpr int L = VT<T>::L;
  V gv[R][C], rv[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      gv[r][c] = vset(g[r * ldg + c]);
      rv[r][c] = vset(ry[r * ldg + c]);
    }
  for (int64_t kv = 0; kv < nv; ++kv) {
    V xr[R], ax[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      xr[r] = vload(x + r * ld + kv * L);
      ax[r] = V{};
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const V wc = vload(w + c * ld + kv * L);
      V aw = V{};
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const V tm = term(xr[r] - wc, rv[r][c]);
        if constexpr (GX) ax[r] += tm * gv[r][c];
        if constexpr (GW) aw += tm * gv[r][c];
      }
      if constexpr (GW) vstore(gw + c * ld + kv * L, vload(gw + c * ld + kv * L) - aw);
    }
    if constexpr (GX) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) vstore(gx + r * ld + kv * L, vload(gx + r * ld + kv * L) + ax[r]);
    }
  }
}

template <typename T, int R, int C, bool GX, bool GW, class Term>
void bwd_pass(const BwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Term& term) {
  constexpr int L = VT<T>::L;
  constexpr int64_t KC = VT<T>::KC;
  const int64_t ld = a.Kp;
  for (int64_t k0 = 0; k0 < a.Kp; k0 += KC) {
    const int64_t nv = imin(KC, a.Kp - k0) / L;
    for (int64_t c0 = n0; c0 < n1; c0 += C) {
      for (int64_t r0 = m0; r0 < m1; r0 += R) {
        const T* g = a.g + r0 * a.Np + c0;
        bool any = false;
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < C; ++c) any |= g[r * a.Np + c] != T(0);
        if (!any) continue;  // padding, or outputs without gradient
        micro_bwd<T, R, C, GX, GW>(a.x + r0 * ld + k0, a.w + c0 * ld + k0, ld, nv, g, a.ry + r0 * a.Np + c0, a.Np,
                                   GX ? a.gx + r0 * ld + k0 : nullptr, GW ? a.gw + c0 * ld + k0 : nullptr, term);
      }
    }
  }
}

template <typename T, int Q>
struct IntTerm {
  using V = typename VT<T>::V;
  V operator()(V t, V ry) const {
    if constexpr (Q == 0) {
      return signed_ipow<0>(t);
    } else {
      return signed_ipow<Q>(t * ry);
    }
  }
};
template <typename T>
struct GenTerm {
  using V = typename VT<T>::V;
  T q;
  V operator()(V t, V ry) const { return vor(pow_nonneg(vabs(t) * ry, q), signbits(t)); }
};

template <typename T, int R, int C, class Term>
inline void bwd_dispatch(const BwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const Term& term) {
  if (a.gx && a.gw) return bwd_pass<T, R, C, true, true>(a, m0, m1, n0, n1, term);
  if (a.gx) return bwd_pass<T, R, C, true, false>(a, m0, m1, n0, n1, term);
  if (a.gw) return bwd_pass<T, R, C, false, true>(a, m0, m1, n0, n1, term);
}

template <typename T>
void bwd_tile(const BwdArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (a.mode == PMode::Int) {
    switch (a.ip) {
      case 1: return bwd_dispatch<T, kBwdR, kBwdC>(a, m0, m1, n0, n1, IntTerm<T, 0>{});
      case 2: return bwd_dispatch<T, kBwdR, kBwdC>(a, m0, m1, n0, n1, IntTerm<T, 1>{});
      case 3: return bwd_dispatch<T, kBwdR, kBwdC>(a, m0, m1, n0, n1, IntTerm<T, 2>{});
      case 4: return bwd_dispatch<T, kBwdR, kBwdC>(a, m0, m1, n0, n1, IntTerm<T, 3>{});
      case 5: return bwd_dispatch<T, kBwdR, kBwdC>(a, m0, m1, n0, n1, IntTerm<T, 4>{});
      case 6: return bwd_dispatch<T, kBwdR, kBwdC>(a, m0, m1, n0, n1, IntTerm<T, 5>{});
      case 7: return bwd_dispatch<T, kBwdR, kBwdC>(a, m0, m1, n0, n1, IntTerm<T, 6>{});
      case 8: return bwd_dispatch<T, kBwdR, kBwdC>(a, m0, m1, n0, n1, IntTerm<T, 7>{});
      default: break;
    }
  }
  bwd_dispatch<T, kBwdGenR, kBwdGenC>(a, m0, m1, n0, n1, GenTerm<T>{T(a.p - 1.0)});
}

// ---------------------------------------------------------------------------------------------
// Interval bounds of max_i |x_i - w_i| over l <= x <= u, with t1 = u - w and t2 = w - l:
//   upper = max_i max(t1, t2);  lower = max(0, -min_i min(t1, t2)).
template <typename T, int R, int C>
inline void micro_bound(const T* __restrict l, const T* __restrict u, const T* __restrict w, int64_t ld, int64_t nv,
                        typename VT<T>::V (&au)[R][C], typename VT<T>::V (&al)[R][C]) {
  using V = typename VT<T>::V;
  constexpr int L = VT<T>::L;
  for (int64_t kv = 0; kv < nv; ++kv) {
    V lr[R], ur[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      lr[r] = vload(l + r * ld + kv * L);
      ur[r] = vload(u + r * ld + kv * L);
    }
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const V wc = vload(w + c * ld + kv * L);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const V t1 = ur[r] - wc, t2 = wc - lr[r];
        au[r][c] = vmax(au[r][c], vmax(t1, t2));
        al[r][c] = vmin(al[r][c], vmin(t1, t2));
      }
    }
  }
}

template <typename T>
void bound_tile(const BoundArgs<T>& a, int64_t m0, int64_t m1, int64_t n0, int64_t n1, T* ws) {
  using V = typename VT<T>::V;
  constexpr int R = kBndR, C = kBndC, L = VT<T>::L;
  constexpr int64_t KC = VT<T>::KC;
  const int64_t nn = n1 - n0, tile = (m1 - m0) * nn, ld = a.Kp, KL = a.Kp / L;
  // per-lane states: max of max(t1, t2) and min of min(t1, t2), t1 = u - w, t2 = w - l
  V* su = reinterpret_cast<V*>(align64(ws));
  V* sl = su + tile;
  for (int64_t i = 0; i < tile; ++i) su[i] = sl[i] = V{};
  for (int64_t k0 = 0; k0 < a.Kp; k0 += KC) {
    const int64_t nv = imin(KC, a.Kp - k0) / L;
    for (int64_t c0 = n0; c0 < n1; c0 += C) {
      for (int64_t r0 = m0; r0 < m1; r0 += R) {
        V au[R][C], al[R][C];
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < C; ++c) au[r][c] = al[r][c] = V{};
        micro_bound<T, R, C>(a.l + r0 * ld + k0, a.u + r0 * ld + k0, a.w + c0 * ld + k0, ld, nv, au, al);
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < C; ++c) {
            const int64_t i = (r0 - m0 + r) * nn + (c0 - n0 + c);
            su[i] = vmax(su[i], au[r][c]);
            sl[i] = vmin(sl[i], al[r][c]);
          }
      }
    }
  }
  const int64_t re = imin(m1, a.M), ce = imin(n1, a.N);
  prefetch_rows(a.lo, a.ldxo, m0, re, a.K);
  prefetch_rows(a.uo, a.ldxo, m0, re, a.K);
  prefetch_rows(a.wo, a.ldwo, n0, ce, a.K);
  for (int64_t r = m0; r < re; ++r) {
    const int64_t ybase = (r / a.HW) * a.y_bstride + r % a.HW;
    const T* lo = a.lo + r * a.ldxo;
    const T* uo = a.uo + r * a.ldxo;
    for (int64_t c = n0; c < ce; ++c) {
      const int64_t i = (r - m0) * nn + (c - n0), o = ybase + c * a.HW;
      const T* wo = a.wo + c * a.ldwo;
      // t1 = u - w and t2 = w - l at original index k, as scalars and as vectors
      auto t1 = [&](int64_t k) { return uo[k] - wo[k]; };
      auto t2 = [&](int64_t k) { return wo[k] - lo[k]; };
      auto vt1 = [&](int64_t k) { return vload(uo + k) - vload(wo + k); };
      auto vt2 = [&](int64_t k) { return vload(wo + k) - vload(lo + k); };
      // upper: first k with max(t1, t2) == y_upper; "u - w" (arg k) preferred on a tie
      const T yu = hmax(su[i]);
      int64_t ku = first_reaching<T>(
          su[i], yu, KL, a.K, [&](int64_t k) { return vmax(t1(k), t2(k)); },
          [&](int64_t k) { return vmax(vt1(k), vt2(k)); });
      if (ku < 0) ku = 0;  // not reached: the max is one of the values
      a.yu[o] = yu;
      a.au[o] = (t1(ku) == yu) ? int32_t(ku) : ~int32_t(ku);
      // lower: y_lower = -min(t1, t2) = max(l - w, w - u) when positive; "l - w" (arg k) preferred
      const T ml = hmin(sl[i]);
      if (-ml > T(0)) {
        int64_t kl = first_reaching<T>(
            sl[i], ml, KL, a.K, [&](int64_t k) { return vmin(t1(k), t2(k)); },
            [&](int64_t k) { return vmin(vt1(k), vt2(k)); });
        if (kl < 0) kl = 0;
        a.yl[o] = -ml;
        a.al[o] = (lo[kl] - wo[kl] == -ml) ? int32_t(kl) : ~int32_t(kl);
      } else {
        a.yl[o] = T(0);
        a.al[o] = std::numeric_limits<int32_t>::min();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// p = inf without argmax on unpacked operands (dist_kernels.h, InfDirectArgs): vectors along n, a
// register block of R rows x C vectors holds its running maxima over the whole reduction.
#if defined(CERTCORE_AVX512)
constexpr int kDirR = int(kDirectRowBlock), kDirC = 4;  // 24 accumulators + 4 operand vectors + 1 broadcast
static_assert(kDirectRows % kDirR == 0 && kDirectCols % (kDirC * VT<float>::L) == 0 &&
              kDirectCols % (kDirC * VT<double>::L) == 0);

inline vf vbroadcast(float s) { return (vf)_mm512_set1_ps(s); }
inline vd vbroadcast(double s) { return (vd)_mm512_set1_pd(s); }
inline vf vload_masked(const float* p, uint32_t m) { return (vf)_mm512_maskz_loadu_ps((__mmask16)m, p); }
inline vd vload_masked(const double* p, uint32_t m) { return (vd)_mm512_maskz_loadu_pd((__mmask8)m, p); }
inline void vstore_masked(float* p, vf v, uint32_t m) { _mm512_mask_storeu_ps(p, (__mmask16)m, (__m512)v); }
inline void vstore_masked(double* p, vd v, uint32_t m) { _mm512_mask_storeu_pd(p, (__mmask8)m, (__m512d)v); }

// Rows [m0, m0 + R) x vectors [n0, n0 + C*L) of c; the last vector holds only the columns in `last`.
template <typename T, int R, int C>
void inf_direct_block(const InfDirectArgs<T>& a, int64_t m0, int64_t n0, uint32_t last) {
  using V = typename VT<T>::V;
  constexpr int L = VT<T>::L;
  V acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = V{};
  const T* ar = a.a + m0 * a.lda;
  const T* bk = a.bt + n0;
  for (int64_t k = 0; k < a.K; ++k, bk += a.ldb) {
    V b[C];
#pragma GCC unroll 8
    for (int c = 0; c + 1 < C; ++c) b[c] = vload(bk + c * L);
    b[C - 1] = vload_masked(bk + (C - 1) * L, last);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V x = vbroadcast(ar[r * a.lda + k]);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] = absmax(acc[r][c], x - b[c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    T* cr = a.c + (m0 + r) * a.ldc + n0;
#pragma GCC unroll 8
    for (int c = 0; c + 1 < C; ++c) vstore(cr + c * L, acc[r][c]);
    vstore_masked(cr + (C - 1) * L, acc[r][C - 1], last);
  }
}

template <typename T, int R, int C = kDirC>
void inf_direct_rows(const InfDirectArgs<T>& a, int64_t m0, int64_t n0, int nv, uint32_t last) {
  if constexpr (C > 1) {
    if (nv < C) return inf_direct_rows<T, R, C - 1>(a, m0, n0, nv, last);
  }
  inf_direct_block<T, R, C>(a, m0, n0, last);
}

template <typename T, int R = kDirR>
void inf_direct_dispatch(const InfDirectArgs<T>& a, int64_t m0, int64_t n0, int rows, int nv, uint32_t last) {
  if constexpr (R > 1) {
    if (rows < R) return inf_direct_dispatch<T, R - 1>(a, m0, n0, rows, nv, last);
  }
  inf_direct_rows<T, R>(a, m0, n0, nv, last);
}

template <typename T>
void inf_direct(const InfDirectArgs<T>& a) {
  constexpr int L = VT<T>::L;
  for (int64_t n0 = 0; n0 < a.N; n0 += kDirC * L) {
    const int64_t cols = imin(kDirC * L, a.N - n0);
    const int nv = int((cols + L - 1) / L);
    const int tail = int(cols - (nv - 1) * L);  // columns of the last vector, 1..L
    const uint32_t last = (1u << tail) - 1u;
    for (int64_t m0 = 0; m0 < a.M; m0 += kDirR)
      inf_direct_dispatch<T>(a, m0, n0, int(imin(kDirR, a.M - m0)), nv, last);
  }
}

// dst[j * ldd + i] = src[i * lds + j]: 16 x 16 float blocks transposed in registers (unpack 32-bit,
// unpack 64-bit, two rounds of 128-bit lane shuffles), edges and doubles element by element. The
// returned masks flag NaN and infinite elements (VFPCLASSPS 0x99: QNaN, SNaN, +inf, -inf).
inline __mmask16 transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
  __mmask16 nonfinite = 0;
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {
    r[i] = _mm512_loadu_ps(src + i * lds);
    nonfinite |= _mm512_fpclass_ps_mask(r[i], 0x99);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
    t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xdd);
    t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
    t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xdd);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, r[i]);
  return nonfinite;
}

// The element-by-element part; returns whether every element was finite.
template <typename T>
bool transpose_scalar(const T* src, int64_t lds, int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* dst,
                      int64_t ldd) {
  bool finite = true;
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t j = j0; j < j1; ++j) {
      const T v = src[i * lds + j];
      finite &= (v - v) == T(0);
      dst[j * ldd + i] = v;
    }
  return finite;
}

bool transpose(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
  const int64_t rb = rows / 16 * 16, cb = cols / 16 * 16;
  __mmask16 nonfinite = 0;
  for (int64_t i0 = 0; i0 < rb; i0 += 16)
    for (int64_t j0 = 0; j0 < cb; j0 += 16)
      nonfinite |= transpose16(src + i0 * lds + j0, lds, dst + j0 * ldd + i0, ldd);
  const bool edges = transpose_scalar(src, lds, 0, rb, cb, cols, dst, ldd) &
                     transpose_scalar(src, lds, rb, rows, 0, cols, dst, ldd);
  return edges && nonfinite == 0;
}
bool transpose(const double* src, int64_t lds, int64_t rows, int64_t cols, double* dst, int64_t ldd) {
  return transpose_scalar(src, lds, 0, rows, 0, cols, dst, ldd);
}
#endif

const KernelTable kTable = {
    CERTCORE_ISA_NAME,   VT<float>::L,       VT<double>::L,        &fwd_tile<float>,  &fwd_tile<double>,
    &bwd_tile<float>,    &bwd_tile<double>,  &bound_tile<float>,   &bound_tile<double>,
#if defined(CERTCORE_AVX512)
    &inf_direct<float>,  &inf_direct<double>, &transpose,          &transpose,
#else
    nullptr,             nullptr,             nullptr,             nullptr,
#endif
};

}  // namespace
}  // namespace certcore::cpu::CERTCORE_ISA_NS
