// Exact top-k inner products: for each query, the k database rows with the largest <q, x>.
// Query blocks run in parallel; each streams the whole database through tile GEMMs and keeps
// its rows' top-k in small heaps, so memory is O((nq + nx) * d + threads * tile^2 + nq * k).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/pair_kernels.h"

namespace alignscope::cpu {

struct TopK {
  std::vector<float> values;     // nq x k, descending per row; -inf where fewer than k rows
  std::vector<int64_t> indices;  // nq x k, x_offset + database row; -1 where missing
};

// query_ids (nq, optional): a query never matches the database row whose global index
// (x_offset + row) equals its id (the nearest *other* item of a set searched against itself).
TopK topk_inner(const float* q, int64_t nq, const float* x, int64_t nx, int64_t dim, int k,
                int64_t x_offset, const int64_t* query_ids, int threads, const Poll& poll);

}  // namespace alignscope::cpu
