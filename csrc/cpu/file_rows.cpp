#include "cpu/file_rows.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

namespace alignscope::cpu {

namespace {

bool read_whole(int fd, uint8_t* dst, int64_t bytes, int64_t offset) {
  while (bytes > 0) {
    const ssize_t got = pread(fd, dst, static_cast<size_t>(bytes), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    dst += got;
    bytes -= got;
    offset += got;
  }
  return true;
}

}  // namespace

int64_t gather_file_rows(int fd, int64_t data_offset, int64_t row_bytes, const int64_t* ids,
                         int64_t n, uint8_t* out, int threads) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n / 64 + 1)));
  std::atomic<int64_t> first_bad{n};
  std::vector<std::thread> pool;
  const int64_t step = (n + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t begin = std::min(n, t * step), end = std::min(n, begin + step);
    pool.emplace_back([=, &first_bad] {
      for (int64_t i = begin; i < end; ++i) {
        if (!read_whole(fd, out + i * row_bytes, row_bytes, data_offset + ids[i] * row_bytes)) {
          int64_t seen = first_bad.load();
          while (i < seen && !first_bad.compare_exchange_weak(seen, i)) {
          }
          return;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return first_bad.load() == n ? -1 : first_bad.load();
}

}  // namespace alignscope::cpu
