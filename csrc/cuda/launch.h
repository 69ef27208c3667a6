// Host launchers of the CUDA engine: raw device pointers, shapes and the caller's stream.
// Nothing here knows Python; nothing synchronises the device.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace alignscope::cuda {

// Rows and columns of one tile of the pair kernel (both dimensions).
constexpr int kTile = 128;
// Inner-dimension padding of the packed fp16 operands (one k-step of the kernel).
constexpr int kStep = 32;

inline int64_t padded_dim(int64_t k) { return (k + kStep - 1) / kStep * kStep; }

enum class PairMode : int { kSymmetric = 0, kRectangular = 1, kBlockDiagonal = 2 };

struct PairArgs {
  const __half* z = nullptr;  // n_rows x kpad, z_i = zscale * rows_i (fp16, zero padded)
  const __half* w = nullptr;  // n_cols x kpad, w_k = cols_k
  int64_t n_rows = 0, n_cols = 0, kpad = 0;
  float c0 = 0.0f, c_label = 0.0f;
  const int32_t* row_labels = nullptr;
  const int32_t* col_labels = nullptr;
  const int64_t* row_ids = nullptr;  // rectangular / block forms: equal ids contribute 0
  const int64_t* col_ids = nullptr;
  PairMode mode = PairMode::kSymmetric;
  int block = kTile;               // rows per block in the block-diagonal form (<= kTile)
  double* row_sums = nullptr;      // n_rows, accumulated into (zero it first)
  double* col_sums = nullptr;      // n_cols, rectangular form only (may be null)
};

// fp16 packing of n x k float32 rows, zero padded to kpad: w = rows and z = zscale * rows
// (zscale null: z = rows); either output may be null.
cudaError_t launch_pack_half(const float* src, int64_t n, int64_t k, int64_t kpad,
                             const float* zscale, __half* z, __half* w, cudaStream_t stream);

// Row (and column) sums of |c0 + <z_i, w_k>| (+ c_label [l_i != l_k]) over the tiles of the
// chosen form, accumulated in float64 with one atomic add per row per tile.
cudaError_t launch_pair_abs_sum(const PairArgs& args, cudaStream_t stream);

int device_count();
const char* device_name(int device, char* buffer, int size);

}  // namespace alignscope::cuda
