// The SIMD tile kernels for the compiler's baseline target (16-byte vectors: SSE2 on x86-64, NEON
// on aarch64), and the choice of the kernel table for this CPU.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "dist_kernels.h"

#define CERTCORE_ISA_NS generic
#define CERTCORE_ISA_NAME "generic"
#define CERTCORE_VBYTES 16
#include "dist_simd.h"

namespace certcore::cpu {

const KernelTable& kernels_generic() { return generic::kTable; }

const KernelTable& kernels() {
  const char* want = std::getenv("CERTCORE_CPU_ISA");
  if (want && std::strcmp(want, "generic") == 0) return kernels_generic();
  if (!(want && std::strcmp(want, "avx2") == 0)) {
    if (const KernelTable* t = kernels_avx512()) return *t;
  }
  if (const KernelTable* t = kernels_avx2()) return *t;
  return kernels_generic();
}

}  // namespace certcore::cpu
