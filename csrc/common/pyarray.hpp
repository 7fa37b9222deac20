// Helpers for the pybind11 bindings, shared by all of them: how an array is described in an error message, the
// checks an input array goes through (dtype, layout, shape, values; a failed check is a ValueError naming the
// argument), and numpy arrays that take over a C++ buffer without a copy.
#pragma once

#include <pybind11/numpy.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "buffer.hpp"
#include "check.hpp"

namespace luab {

// ---- an array in an error message ------------------------------------------------------------------------------

inline std::string shape_of(const pybind11::array& a) {
  std::string s = "(";
  for (pybind11::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

inline std::string dtype_of(const pybind11::array& a) { return std::string(pybind11::str(a.dtype())); }

// A wanted shape as shape_of writes one, a negative extent (any length) as n: "(n,)", "(60, 3)".
inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t d = 0; d < shape.size(); ++d)
    s += (d ? ", " : "") + (shape[d] < 0 ? std::string("n") : std::to_string(shape[d]));
  return s + (shape.size() == 1 ? ",)" : ")");
}

// ---- input checks ----------------------------------------------------------------------------------------------

// Whether a's dtype is T's. Equivalent dtypes (numpy's PyArray_EquivTypes), not the same dtype object: an array that
// comes back from pickle has an int64 dtype object of its own, which `a.dtype().is(py::dtype::of<T>())` refused
// ("must be a int64 array, got dtype int64"). A byte-swapped dtype is not equivalent, so it is still refused.
template <typename T>
bool has_dtype(const pybind11::array& a) {
  return pybind11::array_t<T>::check_(a);
}

// a has shape `shape` (a negative extent: any length), else ValueError "<name> must have shape (n, 3), got (4,)".
inline void check_shape(const pybind11::array& a, const char* name, const std::vector<int64_t>& shape) {
  bool ok = a.ndim() == static_cast<pybind11::ssize_t>(shape.size());
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = shape[d] < 0 || a.shape(d) == shape[d];
  LUAB_CHECK(ok, name, " must have shape ", shape_text(shape), ", got ", shape_of(a));
}

inline void check_c_contiguous(const pybind11::array& a, const char* name) {
  LUAB_CHECK(a.flags() & pybind11::array::c_style, name, " must be C-contiguous");
}

// The data of a C-contiguous array of dtype T and the given shape (a negative extent: any length), checked in that
// order, else ValueError naming it: "<name> must be a <dtype_name> array, got dtype ...", "<name> must be
// C-contiguous", "<name> must have shape (n, 3), got (4,)".
template <typename T>
const T* checked_array(const pybind11::array& a, const char* name, const std::vector<int64_t>& shape,
                       const char* dtype_name) {
  LUAB_CHECK(has_dtype<T>(a), name, " must be a ", dtype_name, " array, got dtype ", dtype_of(a));
  check_c_contiguous(a, name);
  check_shape(a, name, shape);
  return static_cast<const T*>(a.data());
}

// checked_array of a 1-D array of n elements (n < 0: any length).
template <typename T>
const T* checked_vector(const pybind11::array& a, const char* name, int64_t n, const char* dtype_name) {
  return checked_array<T>(a, name, {n}, dtype_name);
}

// An optional array argument: false for None, else true with the array in `holder`, which the caller keeps for as
// long as it reads the data (for anything but an array, e.g. a list, the cast makes a new array that only `holder`
// keeps alive).
inline bool optional_array(const pybind11::object& o, pybind11::array& holder) {
  if (o.is_none()) return false;
  holder = o.cast<pybind11::array>();
  return true;
}

namespace detail {

inline void check_finite(const double* p, int64_t n, const char* name, const char* what, bool nonnegative,
                         const char* index) {
  for (int64_t i = 0; i < n; ++i)
    LUAB_CHECK(std::isfinite(p[i]) && (!nonnegative || p[i] >= 0.0), name, " must hold finite ", what,
               (nonnegative ? " >= 0" : ""), ", got ", p[i], " at ", index, i);
}

}  // namespace detail

// A float64 [n] array (checked_vector) whose values are all finite (and >= 0 with nonnegative), else ValueError
// "<name> must hold finite values >= 0, got -1 at index 3": a NaN or inf start would make every later value NaN.
inline const double* finite_vector(const pybind11::array& a, const char* name, int64_t n, bool nonnegative = false) {
  const double* p = checked_vector<double>(a, name, n, "float64");
  detail::check_finite(p, n, name, "values", nonnegative, "index ");
  return p;
}

// Every value of a float64 table p [n] (any shape, flat) finite and >= 0 (pseudo-counts, probabilities, vote
// weights), else ValueError "<name> must hold finite <what> >= 0, got nan at flat index 7": a NaN, an inf or a
// negative value would come out as NaN or negative "probabilities", a silently wrong result.
inline void check_finite_nonnegative(const double* p, int64_t n, const char* name, const char* what) {
  detail::check_finite(p, n, name, what, true, "flat index ");
}

// ---- results: numpy arrays over C++ buffers (no copy; the array frees the buffer when it is collected) ----------

namespace detail {

template <typename T>
pybind11::capsule deleter_of(std::vector<T>* heap) {
  return pybind11::capsule(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
}

}  // namespace detail

// v's elements as a numpy array of the given shape (v moves to the heap, owned by the array).
template <typename T>
pybind11::array_t<T> to_numpy(std::vector<T>&& v, const std::vector<pybind11::ssize_t>& shape) {
  auto* heap = new std::vector<T>(std::move(v));
  const pybind11::capsule owner = detail::deleter_of(heap);
  return pybind11::array_t<T>(shape, heap->data(), owner);
}

// v as a 1-D numpy array.
template <typename T>
pybind11::array_t<T> to_numpy(std::vector<T>&& v) {
  const auto n = static_cast<pybind11::ssize_t>(v.size());
  return to_numpy(std::move(v), {n});
}

// v's elements read as dtype dt (of T's item size: e.g. uint8 as bool).
template <typename T>
pybind11::array to_numpy(std::vector<T>&& v, const std::vector<pybind11::ssize_t>& shape,
                         const pybind11::dtype& dt) {
  auto* heap = new std::vector<T>(std::move(v));
  const pybind11::capsule owner = detail::deleter_of(heap);
  return pybind11::array(dt, shape, heap->data(), owner);
}

// b's elements as a numpy array of the given shape (the array frees them with std::free, as Buffer would).
template <typename T>
pybind11::array_t<T> to_numpy(Buffer<T>&& b, const std::vector<pybind11::ssize_t>& shape) {
  T* p = b.release();
  const pybind11::capsule owner(p, [](void* q) { std::free(q); });
  return pybind11::array_t<T>(shape, p, owner);
}

}  // namespace luab
