// Row validation and packing: unit-normalise the rows of one or two views into the float32
// matrix the pair kernels read, checking every value on the way (one pass over the input).
#pragma once

#include <cstdint>

namespace alignscope::cpu {

enum class RowProblem : int { kNone = 0, kNonFinite = 1, kZero = 2 };

struct PackStatus {
  RowProblem problem = RowProblem::kNone;
  int view = -1;     // 0: view A, 1: view B
  int64_t row = -1;  // first offending row (in this chunk)
};

// a: n x d_a, b: n x d_b (or null), both row-major T (float, double, or uint16_t holding IEEE
// half-precision bits). Writes unit rows
// [a_i / |a_i|, b_i / |b_i|] into dst (n x (d_a + d_b), float32) and, when cos is not null
// (requires d_a == d_b), cos[i] = <a_i, b_i> / (|a_i| |b_i|) in float64.
template <typename T>
PackStatus pack_unit_rows(const T* a, int64_t d_a, const T* b, int64_t d_b, int64_t n,
                          float* dst, double* cos, int threads);

}  // namespace alignscope::cpu
