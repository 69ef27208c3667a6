#pragma once

#include <pybind11/pybind11.h>

namespace alignscope::bindings {

void register_pairs(pybind11::module_& m);
void register_info(pybind11::module_& m);
void register_io(pybind11::module_& m);

}  // namespace alignscope::bindings
