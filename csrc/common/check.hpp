// One CHECK helper for the whole extension: a failed check throws std::invalid_argument,
// which pybind11 turns into a Python ValueError. Kernels never abort or segfault on bad input.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace luab {

template <typename... Args>
[[noreturn]] inline void fail(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw std::invalid_argument(os.str());
}

}  // namespace luab

#define LUAB_CHECK(cond, ...)       \
  do {                              \
    if (!(cond)) {                  \
      ::luab::fail(__VA_ARGS__);    \
    }                               \
  } while (0)
