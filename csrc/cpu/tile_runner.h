// The CPU engine's work loop and tile GEMM, shared by the pair kernels and top-k search.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include <cblas.h>

#include "cpu/pair_kernels.h"

namespace alignscope::cpu {

// Runs work(thread_id, tile_id) for tile ids 0 .. n_tiles-1 on `threads` workers that take ids
// from a shared counter. The calling thread only polls (signals, progress) and joins.
template <typename Work>
inline void run_tiles(int64_t n_tiles, int threads, const Poll& poll, Work&& work) {
  threads = std::max(1, std::min<int>(threads, static_cast<int>(std::min<int64_t>(n_tiles, 1 << 16))));
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> cancel{false};
  std::exception_ptr failure;
  std::mutex mu;
  std::condition_variable cv;
  int running = threads;

  auto worker = [&](int tid) {
    try {
      for (;;) {
        if (cancel.load(std::memory_order_relaxed)) break;
        const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
        if (t >= n_tiles) break;
        // Long tiles (a query block streaming a whole database) may also watch the flag.
        if constexpr (std::is_invocable_v<Work, int, int64_t, const std::atomic<bool>&>)
          work(tid, t, cancel);
        else
          work(tid, t);
        done.fetch_add(1, std::memory_order_relaxed);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!failure) failure = std::current_exception();
      cancel.store(true);
    }
    std::lock_guard<std::mutex> lock(mu);
    --running;
    cv.notify_all();
  };

  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int i = 0; i < threads; ++i) pool.emplace_back(worker, i);

  bool cancelled = false;
  {
    std::unique_lock<std::mutex> lock(mu);
    while (running > 0) {
      cv.wait_for(lock, std::chrono::milliseconds(100));
      if (running == 0 || !poll || cancelled) continue;  // never poll again once cancelled
      lock.unlock();
      bool keep_going = true;
      try {
        keep_going = poll(done.load(), n_tiles);
      } catch (...) {
        keep_going = false;
      }
      lock.lock();
      if (!keep_going) {
        cancelled = true;
        cancel.store(true);
      }
    }
  }
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
  if (cancelled) throw Cancelled();
  if (poll && !poll(n_tiles, n_tiles)) throw Cancelled();
}

// C (ni x nk, leading dim nk) = A (ni x dim) * B (nk x dim)^T in float32, one thread.
inline void tile_gemm(const float* a, int64_t ni, const float* b, int64_t nk, int64_t dim,
                      float* c) {
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(ni),
                    static_cast<blasint>(nk), static_cast<blasint>(dim), 1.0f, a,
                    static_cast<blasint>(dim), b, static_cast<blasint>(dim), 0.0f, c,
                    static_cast<blasint>(nk));
}

}  // namespace alignscope::cpu
