// alignscope._cuda: the CUDA engine's Python face. Python (alignscope._backend) has checked
// shapes and dtypes; here host arrays are copied to the device, the kernels run on a stream of
// this call, and the float64 sums come back. Nothing here runs at import: a machine without a
// driver imports the module and reports 0 devices.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/launch.h"

namespace py = pybind11;
namespace acu = alignscope::cuda;

namespace {

using F32 = py::array_t<float, py::array::c_style>;
using I32 = py::array_t<int32_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("alignscope CUDA: ") + what + ": " + cudaGetErrorString(err));
}

// A device allocation freed on scope exit (also when an error unwinds the call).
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t count) {
    if (count) check(cudaMalloc(reinterpret_cast<void**>(&ptr), count * sizeof(T)), "cudaMalloc");
  }
  DeviceBuffer(const T* host, size_t count, cudaStream_t stream) : DeviceBuffer(count) {
    if (count) check(cudaMemcpyAsync(ptr, host, count * sizeof(T), cudaMemcpyHostToDevice, stream), "copy to device");
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { check(cudaStreamCreate(&s), "cudaStreamCreate"); }
  ~Stream() {
    if (s) cudaStreamDestroy(s);
  }
};

py::tuple pair_abs_sum_host(const F32& rows, std::optional<F32> cols, std::optional<F32> zscale,
                            float c0, std::optional<I32> row_labels, std::optional<I32> col_labels,
                            float c_label, std::optional<I64> row_ids, std::optional<I64> col_ids,
                            std::optional<int> block, int device) {
  if (rows.ndim() != 2) throw py::value_error("rows must be 2-D");
  const int64_t n = rows.shape(0), k = rows.shape(1);
  const int64_t m = cols ? cols->shape(0) : n;
  if (cols && (cols->ndim() != 2 || cols->shape(1) != k)) throw py::value_error("cols must be (m, k)");
  if (zscale && zscale->size() != k) throw py::value_error("zscale must have k entries");
  // The same contract as the CPU engine (register_pairs.cpp): a bad pair of arrays must be an
  // error here, never a read past a device buffer.
  if (row_labels.has_value() != col_labels.has_value())
    throw py::value_error("give both label arrays or neither");
  if (row_labels && row_labels->size() != n) throw py::value_error("row_labels must have n entries");
  if (col_labels && col_labels->size() != m) throw py::value_error("col_labels must have m entries");
  if (row_ids.has_value() != col_ids.has_value()) throw py::value_error("give both id arrays or neither");
  if (row_ids && !cols) throw py::value_error("ids are for the rectangular and block forms");
  if (row_ids && (row_ids->size() != n || col_ids->size() != m))
    throw py::value_error("id arrays must match the row and column counts");
  if (block && (!cols || n != m || *block < 1 || *block > acu::kTile))
    throw py::value_error("the block form needs cols with as many rows, and 1 <= block <= 128");
  const int64_t kpad = acu::padded_dim(k);
  std::vector<double> row_out(n, 0.0), col_out(cols && !block ? m : 0, 0.0);
  {
    py::gil_scoped_release release;
    check(cudaSetDevice(device), "cudaSetDevice");
    Stream stream;
    DeviceBuffer<float> d_rows(rows.data(), n * k, stream.s);
    DeviceBuffer<float> d_scale(zscale ? zscale->data() : nullptr, zscale ? k : 0, stream.s);
    DeviceBuffer<__half> d_z(n * kpad), d_w_rows(cols ? 0 : n * kpad);
    check(acu::launch_pack_half(d_rows.ptr, n, k, kpad, d_scale.ptr, d_z.ptr, d_w_rows.ptr, stream.s),
          "pack rows");
    DeviceBuffer<float> d_cols(cols ? cols->data() : nullptr, cols ? m * k : 0, stream.s);
    DeviceBuffer<__half> d_w_cols(cols ? m * kpad : 0);
    if (cols)
      check(acu::launch_pack_half(d_cols.ptr, m, k, kpad, nullptr, nullptr, d_w_cols.ptr, stream.s),
            "pack cols");
    DeviceBuffer<int32_t> d_rl(row_labels ? row_labels->data() : nullptr, row_labels ? n : 0, stream.s);
    DeviceBuffer<int32_t> d_cl(col_labels ? col_labels->data() : nullptr, col_labels ? m : 0, stream.s);
    DeviceBuffer<int64_t> d_ri(row_ids ? row_ids->data() : nullptr, row_ids ? n : 0, stream.s);
    DeviceBuffer<int64_t> d_ci(col_ids ? col_ids->data() : nullptr, col_ids ? m : 0, stream.s);
    DeviceBuffer<double> d_row_sums(n), d_col_sums(col_out.size());
    check(cudaMemsetAsync(d_row_sums.ptr, 0, n * sizeof(double), stream.s), "memset");
    if (!col_out.empty()) check(cudaMemsetAsync(d_col_sums.ptr, 0, m * sizeof(double), stream.s), "memset");

    acu::PairArgs args;
    args.z = d_z.ptr;
    args.w = cols ? d_w_cols.ptr : d_w_rows.ptr;
    args.n_rows = n;
    args.n_cols = m;
    args.kpad = kpad;
    args.c0 = c0;
    args.c_label = c_label;
    args.row_labels = d_rl.ptr;
    args.col_labels = cols ? d_cl.ptr : d_rl.ptr;
    args.row_ids = d_ri.ptr;
    args.col_ids = d_ci.ptr;
    args.mode = !cols ? acu::PairMode::kSymmetric
                      : block ? acu::PairMode::kBlockDiagonal : acu::PairMode::kRectangular;
    args.block = block ? *block : acu::kTile;
    args.row_sums = d_row_sums.ptr;
    args.col_sums = col_out.empty() ? nullptr : d_col_sums.ptr;
    check(acu::launch_pair_abs_sum(args, stream.s), "pair_abs_sum kernel");
    check(cudaMemcpyAsync(row_out.data(), d_row_sums.ptr, n * sizeof(double), cudaMemcpyDeviceToHost, stream.s), "copy back");
    if (!col_out.empty())
      check(cudaMemcpyAsync(col_out.data(), d_col_sums.ptr, m * sizeof(double), cudaMemcpyDeviceToHost, stream.s), "copy back");
    check(cudaStreamSynchronize(stream.s), "kernel execution");
  }
  py::array_t<double> rs(static_cast<py::ssize_t>(n), row_out.data());
  py::object cs = py::none();
  if (!col_out.empty()) cs = py::array_t<double>(static_cast<py::ssize_t>(m), col_out.data());
  return py::make_tuple(rs, cs);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "alignscope CUDA engine (compiled). Use the Python API in alignscope, not this module.";
  m.attr("tile") = acu::kTile;
  m.def("device_count", &acu::device_count, "CUDA devices visible (0 without a driver).");
  m.def("device_name", [](int device) {
    char buffer[256];
    return std::string(acu::device_name(device, buffer, sizeof(buffer)));
  });
  m.def("pair_abs_sum_host", &pair_abs_sum_host, py::arg("rows").noconvert(),
        py::arg("cols").noconvert() = py::none(), py::arg("zscale").noconvert() = py::none(),
        py::arg("c0") = 0.0f, py::arg("row_labels").noconvert() = py::none(),
        py::arg("col_labels").noconvert() = py::none(), py::arg("c_label") = 0.0f,
        py::arg("row_ids").noconvert() = py::none(), py::arg("col_ids").noconvert() = py::none(),
        py::arg("block") = py::none(), py::arg("device") = 0,
        "(row_sums, col_sums | None) on the GPU from host float32 arrays (fp16 tensor cores, "
        "fp32 accumulation, float64 sums). Same forms as alignscope._core.pair_abs_sum.");
}
