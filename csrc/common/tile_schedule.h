// The triangular tile schedule: the upper tiles (I <= K) of a T x T grid numbered row by row,
// t = 0 .. T(T+1)/2 - 1. CPU threads and CUDA blocks both take linear tile ids and map them back
// with the closed form below, so no launch or thread is spent on lower-triangle tiles.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace alignscope {

ALIGNSCOPE_HD int64_t upper_tile_count(int64_t T) { return T * (T + 1) / 2; }

// Linear id of tile (I, I): rows 0..I-1 hold T, T-1, ..., T-I+1 tiles.
ALIGNSCOPE_HD int64_t upper_row_start(int64_t I, int64_t T) { return I * T - I * (I - 1) / 2; }

// Inverse of (I, K) -> upper_row_start(I, T) + (K - I). The quadratic gives the row; the two
// correction loops absorb floating-point rounding (they run at most once for T < 2^26).
ALIGNSCOPE_HD void upper_tile_from_linear(int64_t t, int64_t T, int64_t* I, int64_t* K) {
  const double b = 2.0 * static_cast<double>(T) + 1.0;
  const double disc = b * b - 8.0 * static_cast<double>(t);
  int64_t row = static_cast<int64_t>((b - sqrt(disc > 0.0 ? disc : 0.0)) * 0.5);
  if (row < 0) row = 0;
  if (row > T - 1) row = T - 1;
  while (row > 0 && upper_row_start(row, T) > t) --row;
  while (row + 1 < T && upper_row_start(row + 1, T) <= t) ++row;
  *I = row;
  *K = row + (t - upper_row_start(row, T));
}

// Number of tiles of `tile` rows needed to cover n rows.
ALIGNSCOPE_HD int64_t tile_grid(int64_t n, int64_t tile) { return (n + tile - 1) / tile; }

}  // namespace alignscope
