#include "cpu/pair_kernels.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include <cblas.h>

#include "common/tile_schedule.h"
#include "cpu/epilogue.h"
#include "cpu/tile_runner.h"

namespace alignscope::cpu {

int default_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

namespace {

void check_tile(int64_t tile) {
  if (tile < 1 || tile > 8192) throw std::invalid_argument("tile must be in [1, 8192]");
}

}  // namespace

PairAbsSumResult pair_abs_sum(const PairAbsSumProblem& p, int64_t tile, int threads,
                              const Poll& poll) {
  check_tile(tile);
  if (p.symmetric && (p.cols != p.rows || p.n_cols != p.n_rows))
    throw std::invalid_argument("symmetric pair_abs_sum needs cols == rows");
  if (p.symmetric && (p.row_ids || p.squares || p.block_diagonal))
    throw std::invalid_argument("ids, squares and block_diagonal are for the rectangular form");
  if ((p.row_ids == nullptr) != (p.col_ids == nullptr))
    throw std::invalid_argument("give both id arrays or neither");
  if (p.block_diagonal && p.n_rows != p.n_cols)
    throw std::invalid_argument("block_diagonal needs as many rows as columns");
  const bool col_sums = !p.symmetric && !p.block_diagonal;
  PairAbsSumResult out;
  out.row_sums.assign(p.n_rows, 0.0);
  if (p.squares) out.row_sq_sums.assign(p.n_rows, 0.0);
  if (col_sums) out.col_sums.assign(p.n_cols, 0.0);
  if (p.n_rows == 0 || p.n_cols == 0) return out;

  const int64_t row_tiles = tile_grid(p.n_rows, tile);
  const int64_t col_tiles = tile_grid(p.n_cols, tile);
  const int64_t n_tiles = p.symmetric        ? upper_tile_count(row_tiles)
                          : p.block_diagonal ? row_tiles
                                             : row_tiles * col_tiles;
  threads = threads > 0 ? threads : default_threads();
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n_tiles)));
  // The pool supplies the parallelism; OpenBLAS runs each tile on the calling worker.
  scipy_openblas_set_num_threads(1);

  const bool labels = p.row_labels != nullptr && p.col_labels != nullptr;
  const float c0 = p.c0;
  std::vector<std::vector<double>> row_part(threads, std::vector<double>(p.n_rows, 0.0));
  std::vector<std::vector<double>> sq_part(p.squares ? threads : 0,
                                           std::vector<double>(p.n_rows, 0.0));
  std::vector<std::vector<double>> col_part(col_sums ? threads : 0,
                                            std::vector<double>(col_sums ? p.n_cols : 0, 0.0));

  // Per-thread buffers; the scaled z rows of block I are kept while a thread stays on row I
  // (consecutive linear tile ids share their row).
  struct Scratch {
    std::vector<float> zbuf, cbuf, colacc;
    int64_t z_block = -1;
  };
  std::vector<Scratch> scratch(threads);

  run_tiles(n_tiles, threads, poll, [&](int tid, int64_t t) {
    Scratch& s = scratch[tid];
    std::vector<float>& cbuf = s.cbuf;
    std::vector<float>& colacc = s.colacc;
    int64_t I, K;
    if (p.symmetric) {
      upper_tile_from_linear(t, row_tiles, &I, &K);
    } else if (p.block_diagonal) {
      I = K = t;
    } else {
      I = t / col_tiles;
      K = t % col_tiles;
    }
    const int64_t i0 = I * tile, ni = std::min(tile, p.n_rows - i0);
    const int64_t k0 = K * tile, nk = std::min(tile, p.n_cols - k0);
    const float* a = p.rows + i0 * p.dim;
    if (p.zscale) {
      if (s.z_block != I) {
        s.zbuf.resize(static_cast<size_t>(ni * p.dim));
        for (int64_t r = 0; r < ni; ++r) {
          const float* src = a + r * p.dim;
          float* dst = s.zbuf.data() + r * p.dim;
          for (int64_t j = 0; j < p.dim; ++j) dst[j] = src[j] * p.zscale[j];
        }
        s.z_block = I;
      }
      a = s.zbuf.data();
    }
    cbuf.resize(static_cast<size_t>(ni * nk));
    tile_gemm(a, ni, p.cols + k0 * p.dim, nk, p.dim, cbuf.data());

    // A pair of one sample with itself contributes 0. Its labels are equal, so setting the
    // GEMM value to -c0 makes its term exactly |0|. The symmetric diagonal is masked instead.
    if (p.row_ids) {
      const int64_t* ri = p.row_ids + i0;
      const int64_t* ci = p.col_ids + k0;
      for (int64_t r = 0; r < ni; ++r)
        for (int64_t k = 0; k < nk; ++k)
          if (ri[r] == ci[k]) cbuf[r * nk + k] = -c0;
    }
    const bool mask = p.symmetric && I == K;
    const bool with_cols = p.symmetric ? I != K : col_sums;
    if (with_cols) colacc.assign(static_cast<size_t>(nk), 0.0f);
    abs_sum_epilogue(cbuf.data(), ni, nk, nk, c0, labels ? p.row_labels + i0 : nullptr,
                     labels ? p.col_labels + k0 : nullptr, p.c_label, mask, 0,
                     row_part[tid].data() + i0, p.squares ? sq_part[tid].data() + i0 : nullptr,
                     with_cols ? colacc.data() : nullptr);
    if (with_cols) {
      double* dst = p.symmetric ? row_part[tid].data() + k0 : col_part[tid].data() + k0;
      for (int64_t k = 0; k < nk; ++k) dst[k] += static_cast<double>(colacc[k]);
    }
  });

  for (int t = 0; t < threads; ++t) {
    for (int64_t i = 0; i < p.n_rows; ++i) out.row_sums[i] += row_part[t][i];
    if (p.squares)
      for (int64_t i = 0; i < p.n_rows; ++i) out.row_sq_sums[i] += sq_part[t][i];
    if (col_sums)
      for (int64_t k = 0; k < p.n_cols; ++k) out.col_sums[k] += col_part[t][k];
  }
  return out;
}

PairExtrema pair_extrema(const float* x, int64_t n, int64_t dim, int64_t tile, int threads,
                         const Poll& poll) {
  check_tile(tile);
  PairExtrema best;
  if (n < 2) return best;
  const int64_t T = tile_grid(n, tile);
  const int64_t n_tiles = upper_tile_count(T);
  threads = threads > 0 ? threads : default_threads();
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n_tiles)));
  scipy_openblas_set_num_threads(1);
  std::vector<PairExtrema> part(threads);

  std::vector<std::vector<float>> cbufs(threads);

  run_tiles(n_tiles, threads, poll, [&](int tid, int64_t t) {
    std::vector<float>& cbuf = cbufs[tid];
    int64_t I, K;
    upper_tile_from_linear(t, T, &I, &K);
    const int64_t i0 = I * tile, ni = std::min(tile, n - i0);
    const int64_t k0 = K * tile, nk = std::min(tile, n - k0);
    cbuf.resize(static_cast<size_t>(ni * nk));
    tile_gemm(x + i0 * dim, ni, x + k0 * dim, nk, dim, cbuf.data());
    const TileExtrema e = extrema_epilogue(cbuf.data(), ni, nk, nk, I == K, 0);
    if (e.min_row < 0) return;  // a 1 x 1 diagonal tile has no pair
    PairExtrema& b = part[tid];
    if (b.empty || e.min_value < b.min_value) {
      b.min_value = e.min_value; b.min_i = i0 + e.min_row; b.min_k = k0 + e.min_col;
    }
    if (b.empty || e.max_value > b.max_value) {
      b.max_value = e.max_value; b.max_i = i0 + e.max_row; b.max_k = k0 + e.max_col;
    }
    b.empty = false;
  });

  for (const PairExtrema& b : part) {
    if (b.empty) continue;
    if (best.empty || b.min_value < best.min_value) {
      best.min_value = b.min_value; best.min_i = b.min_i; best.min_k = b.min_k;
    }
    if (best.empty || b.max_value > best.max_value) {
      best.max_value = b.max_value; best.max_i = b.max_i; best.max_k = b.max_k;
    }
    best.empty = false;
  }
  return best;
}

}  // namespace alignscope::cpu
