// alignscope._core: the CPU engine. This file only assembles the per-area registrations.
#include "bindings/registers.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "alignscope CPU engine (compiled). Use the Python API in alignscope, not this module.";
  alignscope::bindings::register_pairs(m);
  alignscope::bindings::register_info(m);
  alignscope::bindings::register_io(m);
}
