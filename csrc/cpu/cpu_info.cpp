#include "cpu/cpu_info.h"

#include <cblas.h>

namespace alignscope::cpu {

std::string simd_level() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
  if (__builtin_cpu_supports("avx")) return "avx";
  if (__builtin_cpu_supports("sse4.2")) return "sse4.2";
  return "sse2";
#elif defined(__aarch64__)
  return "neon";
#else
  return "scalar";
#endif
}

std::string blas_info() {
  std::string config = scipy_openblas_get_config();
  const char* core = scipy_openblas_get_corename();
  return config + " (core: " + (core ? core : "unknown") + ")";
}

}  // namespace alignscope::cpu
