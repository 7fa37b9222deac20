// Small helpers for the pybind11 bindings: how an array is described in an error message.
#pragma once

#include <pybind11/numpy.h>

#include <string>

namespace luab {

inline std::string shape_of(const pybind11::array& a) {
  std::string s = "(";
  for (pybind11::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

inline std::string dtype_of(const pybind11::array& a) { return std::string(pybind11::str(a.dtype())); }

}  // namespace luab
