// One CHECK helper for the whole extension: a failed check throws std::invalid_argument,
// which pybind11 turns into a Python ValueError. Kernels never abort or segfault on bad input.
#pragma once

#include <climits>
#include <cstdint>
#include <initializer_list>
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

// The product of sizes (elements of a table about to be allocated), throwing std::invalid_argument naming `what`
// (e.g. "n_tasks * n_classes") when it is negative or would overflow: elem_size * product must fit in int64, so
// the byte count and every int64 index into the table are exact.
inline int64_t checked_size(const char* what, std::initializer_list<int64_t> dims, int64_t elem_size = 8) {
  int64_t n = 1;
  bool ok = true;
  for (int64_t d : dims) ok = ok && d >= 0 && !__builtin_mul_overflow(n, d, &n);
  int64_t bytes = 0;
  ok = ok && !__builtin_mul_overflow(n, elem_size, &bytes);
  if (!ok) {
    std::ostringstream dims_text;
    const char* sep = "";
    for (int64_t d : dims) dims_text << sep << d, sep = " * ";
    fail(what, " = ", dims_text.str(), " elements is too large (overflows a 64-bit size); expected a table that "
         "fits in memory");
  }
  return n;
}

// A count the kernels take as an int (iterations, steps), else std::invalid_argument
// "<name> must be >= 0 (and <= 2147483647), got -1".
inline int checked_count(int64_t n, const char* name) {
  if (n < 0 || n > INT_MAX) fail(name, " must be >= 0 (and <= ", INT_MAX, "), got ", n);
  return static_cast<int>(n);
}

}  // namespace luab

#define LUAB_CHECK(cond, ...)       \
  do {                              \
    if (!(cond)) {                  \
      ::luab::fail(__VA_ARGS__);    \
    }                               \
  } while (0)
