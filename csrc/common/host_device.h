// Marks functions that both the CPU engine (g++) and the CUDA kernels (nvcc) compile.
#pragma once

#if defined(__CUDACC__)
#define ALIGNSCOPE_HD __host__ __device__ __forceinline__
#else
#define ALIGNSCOPE_HD inline
#endif
