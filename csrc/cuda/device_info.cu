#include <cstdio>

#include "cuda/launch.h"

namespace alignscope::cuda {

// With a statically linked runtime and no driver, cudaGetDeviceCount fails: that is 0 devices.
int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

const char* device_name(int device, char* buffer, int size) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    std::snprintf(buffer, size, "unknown");
  } else {
    std::snprintf(buffer, size, "%s (sm_%d%d, %d SMs)", prop.name, prop.major, prop.minor,
                  prop.multiProcessorCount);
  }
  return buffer;
}

}  // namespace alignscope::cuda
