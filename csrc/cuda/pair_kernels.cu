// Tensor-core pair kernel (WMMA, fp16 inputs, fp32 accumulation) with the |c0 + x| epilogue
// reduced per row and column in the block, then added to float64 sums: one atomic per row
// (and column) per tile. Tiles come from the triangular schedule of csrc/common, which the
// CPU engine shares, so the symmetric form launches no lower-triangle work.
#include <mma.h>

#include <algorithm>

#include "common/pair_math.h"
#include "common/tile_schedule.h"
#include "cuda/launch.h"

namespace alignscope::cuda {

namespace {

using namespace nvcuda;

constexpr int kWarps = 8;  // 2 x 4 warps; each owns 64 rows x 32 columns of the tile
constexpr int kThreads = kWarps * 32;
constexpr int kLdAB = kStep + 8;  // shared-memory row pitch (halfs): 80 bytes, breaks bank conflicts
constexpr int kLdC = 16 + 4;      // staging pitch (floats) of one 16 x 16 accumulator fragment

__global__ void pack_half_kernel(const float* __restrict__ src, int64_t n, int64_t k,
                                 int64_t kpad, const float* __restrict__ zscale,
                                 __half* __restrict__ z, __half* __restrict__ w) {
  const int64_t total = n * kpad;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / kpad, c = idx % kpad;
    const float v = c < k ? src[r * k + c] : 0.0f;
    if (w != nullptr) w[idx] = __float2half_rn(v);
    if (z != nullptr) z[idx] = __float2half_rn(zscale != nullptr && c < k ? v * zscale[c] : v);
  }
}

// One pair's term, or 0 for pairs outside the matrix, the symmetric diagonal, or a sample
// paired with itself.
__device__ __forceinline__ float masked_term(const PairArgs& a, int64_t i, int64_t k, float x,
                                             bool inside) {
  if (!inside || i >= a.n_rows || k >= a.n_cols) return 0.0f;
  if (a.mode == PairMode::kSymmetric && i == k) return 0.0f;
  if (a.row_ids != nullptr && a.col_ids != nullptr && a.row_ids[i] == a.col_ids[k]) return 0.0f;
  const bool differ =
      a.row_labels != nullptr && a.col_labels != nullptr && a.row_labels[i] != a.col_labels[k];
  return pair_term(a.c0, x, a.c_label, differ);
}

__global__ void __launch_bounds__(kThreads) pair_abs_sum_kernel(PairArgs a, int64_t n_tiles,
                                                                int64_t row_tiles,
                                                                int64_t col_tiles) {
  __shared__ __align__(128) __half s_a[kTile * kLdAB];
  __shared__ __align__(128) __half s_b[kTile * kLdAB];
  __shared__ __align__(128) float s_c[kWarps * 16 * kLdC];
  __shared__ float s_row[kTile];
  __shared__ float s_col[kTile];

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int warp_row = (warp / 4) * 64;
  const int warp_col = (warp % 4) * 32;
  const int span = a.mode == PairMode::kBlockDiagonal ? a.block : kTile;

  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    int64_t I, K;
    if (a.mode == PairMode::kSymmetric) {
      upper_tile_from_linear(t, row_tiles, &I, &K);
    } else if (a.mode == PairMode::kBlockDiagonal) {
      I = K = t;
    } else {
      I = t / col_tiles;
      K = t % col_tiles;
    }
    const int64_t i0 = I * span, k0 = K * span;
    const bool with_cols = a.mode == PairMode::kSymmetric ? I != K : a.col_sums != nullptr;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
    for (int m = 0; m < 4; ++m)
#pragma unroll
      for (int n = 0; n < 2; ++n) wmma::fill_fragment(acc[m][n], 0.0f);

    for (int64_t kk = 0; kk < a.kpad; kk += kStep) {
      // 128 rows x 32 halfs per operand = 512 vectors of 8 halfs; two per thread.
      for (int idx = threadIdx.x; idx < kTile * (kStep / 8); idx += kThreads) {
        const int r = idx / (kStep / 8);
        const int c = (idx % (kStep / 8)) * 8;
        const int64_t gi = i0 + r, gk = k0 + r;
        uint4 va = make_uint4(0, 0, 0, 0), vb = make_uint4(0, 0, 0, 0);
        if (r < span && gi < a.n_rows)
          va = *reinterpret_cast<const uint4*>(a.z + gi * a.kpad + kk + c);
        if (r < span && gk < a.n_cols)
          vb = *reinterpret_cast<const uint4*>(a.w + gk * a.kpad + kk + c);
        *reinterpret_cast<uint4*>(s_a + r * kLdAB + c) = va;
        *reinterpret_cast<uint4*>(s_b + r * kLdAB + c) = vb;
      }
      __syncthreads();
#pragma unroll
      for (int ks = 0; ks < kStep; ks += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa[4];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb[2];
#pragma unroll
        for (int m = 0; m < 4; ++m)
          wmma::load_matrix_sync(fa[m], s_a + (warp_row + m * 16) * kLdAB + ks, kLdAB);
#pragma unroll
        for (int n = 0; n < 2; ++n)
          wmma::load_matrix_sync(fb[n], s_b + (warp_col + n * 16) * kLdAB + ks, kLdAB);
#pragma unroll
        for (int m = 0; m < 4; ++m)
#pragma unroll
          for (int n = 0; n < 2; ++n) wmma::mma_sync(acc[m][n], fa[m], fb[n], acc[m][n]);
      }
      __syncthreads();
    }

    // Epilogue: each fragment is staged in the warp's 16 x 16 slot, reduced along rows
    // (lane pairs) and columns (lane halves), and added to the tile's shared partial sums.
    for (int i = threadIdx.x; i < kTile; i += kThreads) {
      s_row[i] = 0.0f;
      s_col[i] = 0.0f;
    }
    __syncthreads();
    float* stage = s_c + warp * 16 * kLdC;
#pragma unroll
    for (int m = 0; m < 4; ++m) {
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        wmma::store_matrix_sync(stage, acc[m][n], kLdC, wmma::mem_row_major);
        __syncwarp();
        const int rb = warp_row + m * 16, cb = warp_col + n * 16;
        {
          const int r = lane >> 1, c_first = (lane & 1) * 8;
          const int64_t gi = i0 + rb + r;
          float s = 0.0f;
#pragma unroll
          for (int c = c_first; c < c_first + 8; ++c)
            s += masked_term(a, gi, k0 + cb + c, stage[r * kLdC + c], rb + r < span && cb + c < span);
          s += __shfl_xor_sync(0xffffffffu, s, 1);
          if ((lane & 1) == 0) atomicAdd(&s_row[rb + r], s);
        }
        if (with_cols) {
          const int c = lane & 15, r_first = (lane >> 4) * 8;
          const int64_t gk = k0 + cb + c;
          float s = 0.0f;
#pragma unroll
          for (int r = r_first; r < r_first + 8; ++r)
            s += masked_term(a, i0 + rb + r, gk, stage[r * kLdC + c], rb + r < span && cb + c < span);
          s += __shfl_xor_sync(0xffffffffu, s, 16);
          if (lane < 16) atomicAdd(&s_col[cb + c], s);
        }
        __syncwarp();
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < span; i += kThreads) {
      const int64_t gi = i0 + i;
      if (gi < a.n_rows) atomicAdd(&a.row_sums[gi], static_cast<double>(s_row[i]));
      if (with_cols) {
        const int64_t gk = k0 + i;
        double* dst = a.mode == PairMode::kSymmetric ? a.row_sums : a.col_sums;
        if (gk < a.n_cols) atomicAdd(&dst[gk], static_cast<double>(s_col[i]));
      }
    }
    __syncthreads();  // the next tile reuses the shared buffers
  }
}

}  // namespace

cudaError_t launch_pack_half(const float* src, int64_t n, int64_t k, int64_t kpad,
                             const float* zscale, __half* z, __half* w, cudaStream_t stream) {
  const int64_t total = n * kpad;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 65535));
  pack_half_kernel<<<blocks, threads, 0, stream>>>(src, n, k, kpad, zscale, z, w);
  return cudaGetLastError();
}

cudaError_t launch_pair_abs_sum(const PairArgs& args, cudaStream_t stream) {
  if (args.n_rows == 0 || args.n_cols == 0) return cudaSuccess;
  if (args.kpad % kStep != 0) return cudaErrorInvalidValue;
  const int span = args.mode == PairMode::kBlockDiagonal ? args.block : kTile;
  if (span < 1 || span > kTile) return cudaErrorInvalidValue;
  const int64_t row_tiles = tile_grid(args.n_rows, span);
  const int64_t col_tiles = tile_grid(args.n_cols, span);
  int64_t n_tiles;
  switch (args.mode) {
    case PairMode::kSymmetric: n_tiles = upper_tile_count(row_tiles); break;
    case PairMode::kBlockDiagonal: n_tiles = row_tiles; break;
    default: n_tiles = row_tiles * col_tiles;
  }
  int device = 0, sms = 1;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  // Persistent grid: about two blocks per SM loop over the linear tile ids.
  const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n_tiles, 2 * sms)));
  pair_abs_sum_kernel<<<blocks, kThreads, 0, stream>>>(args, n_tiles, row_tiles, col_tiles);
  return cudaGetLastError();
}

}  // namespace alignscope::cuda
