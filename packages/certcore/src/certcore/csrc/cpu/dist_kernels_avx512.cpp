// The SIMD tile kernels compiled for AVX-512 (F + DQ for VRANGEPS; 16 floats per vector).
// Standard headers come before the target switch so that none of their code is built for AVX-512.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "dist_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
// GCC 12 warns about _mm256_undefined_pd() inside its own _mm512_reduce_* helpers (false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,bmi,bmi2")
#define CERTCORE_ISA_NS avx512
#define CERTCORE_ISA_NAME "avx512"
#define CERTCORE_VBYTES 64
#define CERTCORE_AVX512 1
#include "dist_simd.h"
#pragma GCC diagnostic pop
#pragma GCC pop_options

namespace certcore::cpu {
const KernelTable* kernels_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return ok ? &avx512::kTable : nullptr;
}
}  // namespace certcore::cpu
#else
namespace certcore::cpu {
const KernelTable* kernels_avx512() { return nullptr; }
}  // namespace certcore::cpu
#endif
