// Gathering rows of a file-backed matrix with pread: only the bytes of the requested rows are
// read, through the OS page cache, and nothing is mapped into the process (so random gathers
// over a store larger than memory do not grow the resident set, as mmap fault-around would).
#pragma once

#include <cstdint>

namespace alignscope::cpu {

// out[i * row_bytes ...] = bytes [data_offset + ids[i] * row_bytes, + row_bytes) of fd.
// Returns -1 on success, else the index i of the first row that could not be read whole.
int64_t gather_file_rows(int fd, int64_t data_offset, int64_t row_bytes, const int64_t* ids,
                         int64_t n, uint8_t* out, int threads);

}  // namespace alignscope::cpu
