// The SIMD tile kernels compiled for AVX2 + FMA (8 floats per vector).
// Standard headers come before the target switch so that none of their code is built for AVX2.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "dist_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2")
#define CERTCORE_ISA_NS avx2
#define CERTCORE_ISA_NAME "avx2"
#define CERTCORE_VBYTES 32
#define CERTCORE_AVX2 1
#include "dist_simd.h"
#pragma GCC pop_options

namespace certcore::cpu {
const KernelTable* kernels_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok ? &avx2::kTable : nullptr;
}
}  // namespace certcore::cpu
#else
namespace certcore::cpu {
const KernelTable* kernels_avx2() { return nullptr; }
}  // namespace certcore::cpu
#endif
