#include <pybind11/stl.h>

#include "bindings/registers.h"
#include "common/pair_math.h"
#include "common/tile_schedule.h"
#include "cpu/cpu_info.h"
#include "cpu/pair_kernels.h"

namespace py = pybind11;

namespace alignscope::bindings {

void register_info(py::module_& m) {
  m.def("simd_level", &cpu::simd_level);
  m.def("blas_info", &cpu::blas_info);
  m.def("default_threads", &cpu::default_threads);

  m.def("upper_tile", [](int64_t t, int64_t T) {
    if (T < 1 || t < 0 || t >= upper_tile_count(T)) throw py::value_error("tile id out of range");
    int64_t I, K;
    upper_tile_from_linear(t, T, &I, &K);
    return py::make_tuple(I, K);
  }, py::arg("t"), py::arg("grid"));
  m.def("upper_tile_count", &upper_tile_count, py::arg("grid"));

  m.def("cosine_distance_map", [](double lo, double hi) {
    const AffineDistance d = cosine_distance_map(lo, hi);
    return py::make_tuple(d.offset, d.slope);
  }, py::arg("lo"), py::arg("hi"));
  m.def("embedding_structure_constants", [](double lo_a, double hi_a, double lo_b, double hi_b) {
    const StructureConstants s = embedding_structure_constants(cosine_distance_map(lo_a, hi_a),
                                                               cosine_distance_map(lo_b, hi_b));
    return py::make_tuple(s.c0, s.scale_a, s.scale_b, s.c_label);
  }, py::arg("lo_a"), py::arg("hi_a"), py::arg("lo_b"), py::arg("hi_b"));
  m.def("label_structure_constants", [](double lo_a, double hi_a) {
    const StructureConstants s = label_structure_constants(cosine_distance_map(lo_a, hi_a));
    return py::make_tuple(s.c0, s.scale_a, s.scale_b, s.c_label);
  }, py::arg("lo_a"), py::arg("hi_a"));
}

}  // namespace alignscope::bindings
