#include "cpu/topk.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "common/tile_schedule.h"
#include "cpu/tile_runner.h"

namespace alignscope::cpu {

namespace {

constexpr int64_t kQueryTile = 256;
constexpr int64_t kBaseTile = 2048;

// A row's top-k as a min-heap on (value): the root is the value a candidate must beat.
struct RowHeap {
  float* values;
  int64_t* indices;
  int k;
  int filled;

  float threshold() const {
    return filled < k ? -std::numeric_limits<float>::infinity() : values[0];
  }

  void push(float v, int64_t index) {
    // Min-heap by value; sift up or replace the root and sift down.
    if (filled < k) {
      int i = filled++;
      while (i > 0) {
        const int parent = (i - 1) / 2;
        if (values[parent] <= v) break;
        values[i] = values[parent];
        indices[i] = indices[parent];
        i = parent;
      }
      values[i] = v;
      indices[i] = index;
      return;
    }
    int i = 0;
    for (;;) {
      const int left = 2 * i + 1;
      if (left >= k) break;
      const int right = left + 1;
      const int child = (right < k && values[right] < values[left]) ? right : left;
      if (values[child] >= v) break;
      values[i] = values[child];
      indices[i] = indices[child];
      i = child;
    }
    values[i] = v;
    indices[i] = index;
  }

  // Descending by value, ties by ascending index (deterministic output).
  void sort_descending() {
    std::vector<std::pair<float, int64_t>> items(filled);
    for (int j = 0; j < filled; ++j) items[j] = {values[j], indices[j]};
    std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    for (int j = 0; j < filled; ++j) {
      values[j] = items[j].first;
      indices[j] = items[j].second;
    }
  }
};

}  // namespace

TopK topk_inner(const float* q, int64_t nq, const float* x, int64_t nx, int64_t dim, int k,
                int64_t x_offset, const int64_t* query_ids, int threads, const Poll& poll) {
  if (k < 1) throw std::invalid_argument("k must be >= 1");
  TopK out;
  out.values.assign(static_cast<size_t>(nq * k), -std::numeric_limits<float>::infinity());
  out.indices.assign(static_cast<size_t>(nq * k), -1);
  if (nq == 0 || nx == 0) return out;
  const int64_t n_tiles = tile_grid(nq, kQueryTile);
  threads = threads > 0 ? threads : default_threads();
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n_tiles)));
  scipy_openblas_set_num_threads(1);
  std::vector<std::vector<float>> cbufs(threads);

  run_tiles(n_tiles, threads, poll, [&](int tid, int64_t t, const std::atomic<bool>& cancel) {
    const int64_t i0 = t * kQueryTile, ni = std::min(kQueryTile, nq - i0);
    std::vector<float>& cbuf = cbufs[tid];
    cbuf.resize(static_cast<size_t>(ni * kBaseTile));
    std::vector<RowHeap> heaps(ni);
    for (int64_t r = 0; r < ni; ++r)
      heaps[r] = RowHeap{out.values.data() + (i0 + r) * k, out.indices.data() + (i0 + r) * k, k, 0};
    for (int64_t k0 = 0; k0 < nx; k0 += kBaseTile) {
      if (cancel.load(std::memory_order_relaxed)) return;
      const int64_t nk = std::min(kBaseTile, nx - k0);
      tile_gemm(q + i0 * dim, ni, x + k0 * dim, nk, dim, cbuf.data());
      for (int64_t r = 0; r < ni; ++r) {
        RowHeap& heap = heaps[r];
        const float* c = cbuf.data() + r * nk;
        const int64_t skip = query_ids ? query_ids[i0 + r] - x_offset - k0 : -1;
        float threshold = heap.threshold();
        for (int64_t j = 0; j < nk; ++j) {
          if (c[j] > threshold && j != skip) {
            heap.push(c[j], x_offset + k0 + j);
            threshold = heap.threshold();
          }
        }
      }
    }
    for (RowHeap& heap : heaps) heap.sort_descending();
  });
  return out;
}

}  // namespace alignscope::cpu
