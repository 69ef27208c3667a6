#include "cpu/prepare.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

namespace alignscope::cpu {

namespace {

// Sum of squares in float64. NaN/inf anywhere makes the sum non-finite, so the common case
// needs no per-element test; only then is the row scanned, either to report the bad value or,
// for finite values beyond ~1e154 whose squares overflow, to rescale by the largest magnitude.
template <typename T>
bool norm_of(const T* x, int64_t d, double* norm, double* scale) {
  double ss = 0.0;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  *scale = 1.0;
  if (!std::isfinite(ss)) {
    double peak = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double v = static_cast<double>(x[j]);
      if (!std::isfinite(v)) return false;
      peak = std::max(peak, std::fabs(v));
    }
    ss = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double v = static_cast<double>(x[j]) / peak;
      ss += v * v;
    }
    *scale = peak;
  }
  *norm = std::sqrt(ss) * *scale;
  return true;
}

template <typename T>
double cosine_rescaled(const T* a, const T* b, int64_t d, double na, double nb) {
  double dot = 0.0;
  for (int64_t j = 0; j < d; ++j) dot += (static_cast<double>(a[j]) / na) * (static_cast<double>(b[j]) / nb);
  return dot;
}

template <typename T>
PackStatus pack_range(const T* a, int64_t d_a, const T* b, int64_t d_b, int64_t begin,
                      int64_t end, float* dst, double* cos) {
  const int64_t width = d_a + d_b;
  for (int64_t i = begin; i < end; ++i) {
    const T* views[2] = {a + i * d_a, b ? b + i * d_b : nullptr};
    const int64_t dims[2] = {d_a, d_b};
    double norms[2] = {1.0, 1.0};
    float* out = dst + i * width;
    for (int v = 0; v < (b ? 2 : 1); ++v) {
      double scale = 1.0;
      if (!norm_of(views[v], dims[v], &norms[v], &scale))
        return PackStatus{RowProblem::kNonFinite, v, i};
      if (norms[v] == 0.0) return PackStatus{RowProblem::kZero, v, i};
      // Divide in two steps when the row was rescaled, so no intermediate overflows.
      const double inv = 1.0 / (norms[v] / scale);
      const double pre = 1.0 / scale;
#pragma omp simd
      for (int64_t j = 0; j < dims[v]; ++j)
        out[j] = static_cast<float>((static_cast<double>(views[v][j]) * pre) * inv);
      out += dims[v];
    }
    if (cos) {
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < d_a; ++j)
        dot += static_cast<double>(views[0][j]) * static_cast<double>(views[1][j]);
      // Divide after the sum: the rescaled (huge) rows are the only ones that could overflow.
      cos[i] = std::isfinite(dot) ? dot / norms[0] / norms[1] : cosine_rescaled(views[0], views[1], d_a, norms[0], norms[1]);
    }
  }
  return PackStatus{};
}

}  // namespace

template <typename T>
PackStatus pack_unit_rows(const T* a, int64_t d_a, const T* b, int64_t d_b, int64_t n,
                          float* dst, double* cos, int threads) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n / 256 + 1)));
  std::vector<PackStatus> status(threads);
  std::vector<std::thread> pool;
  const int64_t step = (n + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t begin = std::min(n, t * step), end = std::min(n, begin + step);
    pool.emplace_back([&, t, begin, end] { status[t] = pack_range(a, d_a, b, d_b, begin, end, dst, cos); });
  }
  for (auto& th : pool) th.join();
  // Ranges are in row order, so the first thread with a problem holds the first bad row.
  for (const PackStatus& s : status)
    if (s.problem != RowProblem::kNone) return s;
  return PackStatus{};
}

template PackStatus pack_unit_rows<float>(const float*, int64_t, const float*, int64_t, int64_t,
                                          float*, double*, int);
template PackStatus pack_unit_rows<double>(const double*, int64_t, const double*, int64_t,
                                           int64_t, float*, double*, int);

}  // namespace alignscope::cpu
