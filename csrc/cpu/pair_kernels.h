// The CPU engine: tiled, multi-threaded pair primitives over row-major float32 embeddings.
// Memory is O((n_rows + n_cols) * dim + threads * tile^2): no N x N matrix exists at any time.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <vector>

namespace alignscope::cpu {

// Called by the calling thread about every 100 ms with (tiles done, tiles in all); returning
// false cancels the run (the workers stop after their current tile).
using Poll = std::function<bool(int64_t, int64_t)>;

struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("alignscope: computation cancelled") {}
};

struct PairAbsSumProblem {
  const float* rows = nullptr;  // n_rows x dim; z_i = zscale * rows[i]
  int64_t n_rows = 0;
  const float* cols = nullptr;  // n_cols x dim; w_k = cols[k]
  int64_t n_cols = 0;
  int64_t dim = 0;
  const float* zscale = nullptr;  // dim scales for z, or null for all ones
  float c0 = 0.0f;
  const int32_t* row_labels = nullptr;  // optional label view (both or neither)
  const int32_t* col_labels = nullptr;
  float c_label = 0.0f;
  // symmetric: cols == rows; only tiles I <= K are computed, the diagonal i == k is excluded
  // and an off-diagonal tile adds its column sums to the rows of K (so col_sums stay empty).
  bool symmetric = true;
  // Rectangular form only. Global sample ids of the rows and columns (both or neither): pairs
  // with equal ids are the same sample and contribute 0. Equal ids must come with equal labels.
  const int64_t* row_ids = nullptr;
  const int64_t* col_ids = nullptr;
  // Rectangular form only: also sum the squared terms per row (standard errors of estimates).
  bool squares = false;
  // Rectangular form only: n_rows == n_cols, and only the tiles (t, t) are computed: B
  // independent tile x tile blocks laid end to end (block-sampled estimators).
  bool block_diagonal = false;
};

struct PairAbsSumResult {
  std::vector<double> row_sums;     // n_rows
  std::vector<double> row_sq_sums;  // n_rows when squares, else empty
  std::vector<double> col_sums;     // n_cols (rectangular, not block-diagonal), else empty
};

PairAbsSumResult pair_abs_sum(const PairAbsSumProblem& p, int64_t tile, int threads,
                              const Poll& poll);

struct PairExtrema {
  bool empty = true;  // no pair (n < 2)
  float min_value = 0.0f, max_value = 0.0f;
  int64_t min_i = -1, min_k = -1, max_i = -1, max_k = -1;
};

// Min and max of <x_i, x_k> over i != k of one view (n x dim), upper tiles only.
PairExtrema pair_extrema(const float* x, int64_t n, int64_t dim, int64_t tile, int threads,
                         const Poll& poll);

// Threads the engine uses when the caller passes 0.
int default_threads();

}  // namespace alignscope::cpu
