// Vectorised tile epilogues of the CPU engine. Compiled once per instruction set
// (target_clones) and dispatched at load time, so one wheel runs at AVX-512 or AVX2 speed.
#pragma once

#include <cstdint>

namespace alignscope::cpu {

// Adds sum_k |c0 + C[r,k] + c_label*[li[r] != lk[k]]| to row_out[r] (float64), and, when
// col_acc is not null, the same terms down each column to col_acc[k] (float32, one tile tall).
// Labels may be null (no label term). C is ni x nk with leading dimension ldc. When mask is
// true the entries with k - r == mask_offset (the i == k diagonal) contribute nothing. When
// row_sq_out is not null, the squared terms are summed per row into it as well.
void abs_sum_epilogue(const float* C, int64_t ni, int64_t nk, int64_t ldc, float c0,
                      const int32_t* li, const int32_t* lk, float c_label, bool mask,
                      int64_t mask_offset, double* row_out, double* row_sq_out, float* col_acc);

struct TileExtrema {
  float min_value;
  float max_value;
  int64_t min_row, min_col, max_row, max_col;  // positions inside the tile; -1 when empty
};

// Min and max of C over entries not masked. Entries with col - row == mask_offset are skipped
// when mask is true (the i == k diagonal).
TileExtrema extrema_epilogue(const float* C, int64_t ni, int64_t nk, int64_t ldc, bool mask,
                             int64_t mask_offset);

}  // namespace alignscope::cpu
