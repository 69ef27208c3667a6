#include "cpu/prepare.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace alignscope::cpu {

namespace {

// Sum of squares in float64. NaN/inf anywhere makes the sum non-finite, so the common case
// needs no per-element test; only then is the row scanned, either to report the bad value or,
// for finite values beyond ~1e154 whose squares overflow, to rescale by the largest magnitude.
// Below this sum of squares (about 1e-150 squared) rows are rescaled before the norm.
constexpr double kTinySumOfSquares = 1e-300;

template <typename T>
bool norm_of(const T* x, int64_t d, double* norm, double* scale) {
  double ss = 0.0;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  *scale = 1.0;
  // Rescale by the largest magnitude when the squares overflow, or when they may have
  // underflowed (float64 rows below ~1e-154 square to subnormals or 0): a nonzero row must not
  // read as a zero row, nor lose its direction.
  if (!std::isfinite(ss) || ss < kTinySumOfSquares) {
    double peak = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double v = static_cast<double>(x[j]);
      if (!std::isfinite(v)) return false;
      peak = std::max(peak, std::fabs(v));
    }
    if (peak == 0.0) {  // a true zero row: the caller reports it
      *norm = 0.0;
      return true;
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
    double scales[2] = {1.0, 1.0};
    float* out = dst + i * width;
    for (int v = 0; v < (b ? 2 : 1); ++v) {
      double& scale = scales[v];
      if (!norm_of(views[v], dims[v], &norms[v], &scale))
        return PackStatus{RowProblem::kNonFinite, v, i};
      if (norms[v] == 0.0) return PackStatus{RowProblem::kZero, v, i};
      // Divide in two steps when the row was rescaled, so no intermediate overflows; divide by
      // the scale rather than multiply by its inverse, which overflows for a subnormal peak.
      const double inv = 1.0 / (norms[v] / scale);
      if (scale == 1.0) {
#pragma omp simd
        for (int64_t j = 0; j < dims[v]; ++j)
          out[j] = static_cast<float>(static_cast<double>(views[v][j]) * inv);
      } else {
        for (int64_t j = 0; j < dims[v]; ++j)
          out[j] = static_cast<float>((static_cast<double>(views[v][j]) / scale) * inv);
      }
      out += dims[v];
    }
    if (cos) {
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < d_a; ++j)
        dot += static_cast<double>(views[0][j]) * static_cast<double>(views[1][j]);
      // Divide after the sum: the rescaled (huge) rows are the only ones that could overflow.
      // Rows that needed rescaling (huge or tiny) take the rescaled cosine: their raw dot
      // product overflows or underflows.
      const bool plain = std::isfinite(dot) && scales[0] == 1.0 && scales[1] == 1.0;
      cos[i] = plain ? dot / norms[0] / norms[1]
                     : cosine_rescaled(views[0], views[1], d_a, norms[0], norms[1]);
    }
  }
  return PackStatus{};
}

// IEEE binary16 -> float32, exact for every bit pattern (subnormals, inf, NaN included).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // +-0
  } else {  // subnormal: normalise the mantissa
    uint32_t shift = 0;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      ++shift;
    }
    bits = sign | ((113u - shift) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

void halves_to_floats_portable(const uint16_t* src, float* dst, int64_t d) {
  for (int64_t j = 0; j < d; ++j) dst[j] = half_to_float(src[j]);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx,f16c"))) void halves_to_floats_f16c(const uint16_t* src, float* dst,
                                                               int64_t d) {
  int64_t j = 0;
  for (; j + 8 <= d; j += 8)
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
  for (; j < d; ++j) dst[j] = half_to_float(src[j]);
}
#endif

using HalfConverter = void (*)(const uint16_t*, float*, int64_t);

HalfConverter half_converter() {
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx")) return halves_to_floats_f16c;
#endif
  return halves_to_floats_portable;
}

// Rows of half inputs are widened one at a time into float buffers, then packed exactly as
// float32 rows are: the result is bit-identical to converting the whole array first, without
// the n x d float32 copy (numpy's float16 conversion is a scalar loop, ~15 ns per element).
PackStatus pack_range_half(const uint16_t* a, int64_t d_a, const uint16_t* b, int64_t d_b,
                           int64_t begin, int64_t end, float* dst, double* cos) {
  static const HalfConverter widen = half_converter();
  std::vector<float> row_a(static_cast<size_t>(d_a)), row_b(static_cast<size_t>(b ? d_b : 0));
  const int64_t width = d_a + d_b;
  for (int64_t i = begin; i < end; ++i) {
    widen(a + i * d_a, row_a.data(), d_a);
    if (b) widen(b + i * d_b, row_b.data(), d_b);
    PackStatus s = pack_range<float>(row_a.data(), d_a, b ? row_b.data() : nullptr, d_b, 0, 1,
                                     dst + i * width, cos ? cos + i : nullptr);
    if (s.problem != RowProblem::kNone) {
      s.row = i;
      return s;
    }
  }
  return PackStatus{};
}

template <typename T>
PackStatus pack_chunk(const T* a, int64_t d_a, const T* b, int64_t d_b, int64_t begin,
                      int64_t end, float* dst, double* cos) {
  if constexpr (std::is_same_v<T, uint16_t>)
    return pack_range_half(a, d_a, b, d_b, begin, end, dst, cos);
  else
    return pack_range<T>(a, d_a, b, d_b, begin, end, dst, cos);
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
    pool.emplace_back([&, t, begin, end] { status[t] = pack_chunk<T>(a, d_a, b, d_b, begin, end, dst, cos); });
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
template PackStatus pack_unit_rows<uint16_t>(const uint16_t*, int64_t, const uint16_t*, int64_t,
                                             int64_t, float*, double*, int);

}  // namespace alignscope::cpu
