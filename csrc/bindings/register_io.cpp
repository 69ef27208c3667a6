// Row gathers from files (embedding stores larger than memory).
#include <pybind11/numpy.h>

#include "bindings/registers.h"
#include "cpu/file_rows.h"
#include "cpu/pair_kernels.h"

namespace py = pybind11;

namespace alignscope::bindings {

void register_io(py::module_& m) {
  m.def(
      "gather_file_rows",
      [](int fd, int64_t data_offset, int64_t row_bytes,
         const py::array_t<int64_t, py::array::c_style>& ids,
         py::array_t<uint8_t, py::array::c_style>& out, int threads) {
        if (ids.ndim() != 1 || out.ndim() != 2 || out.shape(0) != ids.shape(0) ||
            out.shape(1) != row_bytes)
          throw py::value_error("out must be (len(ids), row_bytes) uint8");
        const int64_t* pid = ids.data();
        uint8_t* pout = out.mutable_data();
        const int64_t n = ids.shape(0);
        py::gil_scoped_release release;
        return cpu::gather_file_rows(fd, data_offset, row_bytes, pid, n, pout,
                                     threads > 0 ? threads : cpu::default_threads());
      },
      py::arg("fd"), py::arg("data_offset"), py::arg("row_bytes"), py::arg("ids").noconvert(),
      py::arg("out").noconvert(), py::arg("threads") = 0,
      "pread rows ids of a row-major file matrix into out; -1, or the first unreadable index.");

}

}  // namespace alignscope::bindings
