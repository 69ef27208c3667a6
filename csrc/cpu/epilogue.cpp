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
template <bool kLabels, bool kCols, bool kMask, bool kSquares>
inline void abs_sum_rows(const float* C, int64_t ni, int64_t nk, int64_t ldc, float c0,
                         const int32_t* li, const int32_t* lk, float c_label,
                         int64_t mask_offset, double* row_out, double* row_sq_out,
                         float* col_acc) {
  for (int64_t r = 0; r < ni; ++r) {
    const float* c = C + r * ldc;
    const int32_t label_r = kLabels ? li[r] : 0;
    const int64_t masked = r + mask_offset;
    float acc = 0.0f, acc2 = 0.0f;
#pragma omp simd reduction(+ : acc, acc2)
    for (int64_t k = 0; k < nk; ++k) {
      const float term = pair_term(c0, c[k], c_label, kLabels && (lk[k] != label_r));
      const float v = (kMask && k == masked) ? 0.0f : term;
      acc += v;
      if constexpr (kSquares) acc2 += v * v;
      if constexpr (kCols) col_acc[k] += v;
    }
    row_out[r] += static_cast<double>(acc);
    if constexpr (kSquares) row_sq_out[r] += static_cast<double>(acc2);
  }
}

struct EpilogueArgs {
  const float* C;
  int64_t ni, nk, ldc;
  float c0;
  const int32_t *li, *lk;
  float c_label;
  int64_t mask_offset;
  double *row_out, *row_sq_out;
  float* col_acc;
};

template <bool kLabels, bool kCols, bool kMask, bool kSquares>
inline void run_rows(const EpilogueArgs& a) {
  abs_sum_rows<kLabels, kCols, kMask, kSquares>(a.C, a.ni, a.nk, a.ldc, a.c0, a.li, a.lk,
                                                a.c_label, a.mask_offset, a.row_out,
                                                a.row_sq_out, a.col_acc);
}

// Turns the four run-time flags into one of the 16 compiled variants.
template <bool... kFlags>
inline void dispatch(const EpilogueArgs& a, const bool* flags, int depth) {
  if constexpr (sizeof...(kFlags) == 4) {
    run_rows<kFlags...>(a);
  } else {
    if (flags[depth]) dispatch<kFlags..., true>(a, flags, depth + 1);
    else dispatch<kFlags..., false>(a, flags, depth + 1);
  }
}

}  // namespace

ALIGNSCOPE_CLONES
void abs_sum_epilogue(const float* C, int64_t ni, int64_t nk, int64_t ldc, float c0,
                      const int32_t* li, const int32_t* lk, float c_label, bool mask,
                      int64_t mask_offset, double* row_out, double* row_sq_out, float* col_acc) {
  // A tile meets the diagonal on at most min(ni, nk) entries: only those tiles pay for the mask.
  const bool hits = mask && mask_offset > -ni && mask_offset < nk;
  const bool flags[4] = {li != nullptr && lk != nullptr, col_acc != nullptr, hits,
                         row_sq_out != nullptr};
  const EpilogueArgs args{C, ni, nk, ldc, c0, li, lk, c_label, hits ? mask_offset : 0,
                          row_out, row_sq_out, col_acc};
  dispatch<>(args, flags, 0);
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
