#pragma once

#include <string>

namespace alignscope::cpu {

// The widest vector instruction set this process can use ("avx512f", "avx2", "sse4.2", ...).
std::string simd_level();
// OpenBLAS's description of itself (version, kernel it chose for this CPU).
std::string blas_info();

}  // namespace alignscope::cpu
