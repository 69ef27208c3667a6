#include "cpu/epilogue.h"

#include <limits>

#include "common/pair_math.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ALIGNSCOPE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ALIGNSCOPE_CLONES
#endif

namespace alignscope::cpu {

namespace {

// Row sums stay in float32 for one tile row (a few hundred terms) before they reach float64.
template <bool kLabels, bool kCols, bool kMask>
inline void abs_sum_rows(const float* C, int64_t ni, int64_t nk, int64_t ldc, float c0,
                         const int32_t* li, const int32_t* lk, float c_label,
                         int64_t mask_offset, double* row_out, float* col_acc) {
  for (int64_t r = 0; r < ni; ++r) {
    const float* c = C + r * ldc;
    const int32_t label_r = kLabels ? li[r] : 0;
    const int64_t masked = r + mask_offset;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < nk; ++k) {
      const float term = pair_term(c0, c[k], c_label, kLabels && (lk[k] != label_r));
      const float v = (kMask && k == masked) ? 0.0f : term;
      acc += v;
      if constexpr (kCols) col_acc[k] += v;
    }
    row_out[r] += static_cast<double>(acc);
  }
}

template <bool kLabels, bool kCols>
inline void abs_sum_masked(const float* C, int64_t ni, int64_t nk, int64_t ldc, float c0,
                           const int32_t* li, const int32_t* lk, float c_label, bool mask,
                           int64_t mask_offset, double* row_out, float* col_acc) {
  // A tile meets the diagonal on at most min(ni, nk) entries: only those tiles pay for the mask.
  const bool hits = mask && mask_offset > -ni && mask_offset < nk;
  if (hits)
    abs_sum_rows<kLabels, kCols, true>(C, ni, nk, ldc, c0, li, lk, c_label, mask_offset, row_out, col_acc);
  else
    abs_sum_rows<kLabels, kCols, false>(C, ni, nk, ldc, c0, li, lk, c_label, 0, row_out, col_acc);
}

}  // namespace

ALIGNSCOPE_CLONES
void abs_sum_epilogue(const float* C, int64_t ni, int64_t nk, int64_t ldc, float c0,
                      const int32_t* li, const int32_t* lk, float c_label, bool mask,
                      int64_t mask_offset, double* row_out, float* col_acc) {
  const bool labels = li != nullptr && lk != nullptr;
  if (labels) {
    if (col_acc) abs_sum_masked<true, true>(C, ni, nk, ldc, c0, li, lk, c_label, mask, mask_offset, row_out, col_acc);
    else abs_sum_masked<true, false>(C, ni, nk, ldc, c0, li, lk, c_label, mask, mask_offset, row_out, col_acc);
  } else {
    if (col_acc) abs_sum_masked<false, true>(C, ni, nk, ldc, c0, li, lk, c_label, mask, mask_offset, row_out, col_acc);
    else abs_sum_masked<false, false>(C, ni, nk, ldc, c0, li, lk, c_label, mask, mask_offset, row_out, col_acc);
  }
}

TileExtrema extrema_epilogue(const float* C, int64_t ni, int64_t nk, int64_t ldc, bool mask,
                             int64_t mask_offset) {
  TileExtrema e{std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                -1, -1, -1, -1};
  for (int64_t r = 0; r < ni; ++r) {
    const float* c = C + r * ldc;
    for (int64_t k = 0; k < nk; ++k) {
      if (mask && k - r == mask_offset) continue;
      const float v = c[k];
      if (v < e.min_value) { e.min_value = v; e.min_row = r; e.min_col = k; }
      if (v > e.max_value) { e.max_value = v; e.max_row = r; e.max_col = k; }
    }
  }
  return e;
}

}  // namespace alignscope::cpu
