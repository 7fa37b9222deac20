// OpenMP hygiene shared by every kernel: a bounded thread count, and exceptions kept inside parallel regions.
//
// An exception that leaves an OpenMP region ends the process (GCC wraps each region in a must-not-throw scope:
// std::terminate, SIGABRT), so a region only allocates or calls what may throw through FirstError::run, and
// the caller rethrows after the region, where pybind11 turns it into a Python exception.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <utility>

#include "common/check.hpp"

namespace luab {

// The most threads any kernel starts. libgomp crashes (SIGSEGV) when asked for ~100k threads, and no machine
// this runs on has a thousand cores; luab_fast.aggregate checks the same cap in Python.
constexpr int kMaxThreads = 1024;

// n_threads as a binding receives it: 0 means OpenMP's default, 1..kMaxThreads as given; anything else throws
// std::invalid_argument (ValueError) naming the argument.
inline int check_threads(int64_t n_threads, const char* name = "n_threads") {
  LUAB_CHECK(n_threads >= 0 && n_threads <= kMaxThreads, name, ": expected 0 (OpenMP's default) or a thread count "
             "in 1..", kMaxThreads, ", got ", n_threads);
  return static_cast<int>(n_threads);
}

// OpenMP's default thread count, capped like an explicit one (OMP_NUM_THREADS may ask for more).
inline int default_threads() { return std::clamp(omp_get_max_threads(), 1, kMaxThreads); }

// n_threads > 0 as given (within the cap), otherwise the default.
inline int threads_or_default(int n_threads) {
  return n_threads > 0 ? std::min(n_threads, kMaxThreads) : default_threads();
}

// The first exception thrown by work run inside an OpenMP region, rethrown after it:
//   FirstError err;
//   #pragma omp parallel
//   { std::vector<double> row; const bool ok = err.run([&] { row.resize(k); });
//     #pragma omp for
//     for (...) { if (!ok) continue; ... } }
//   err.rethrow();
class FirstError {
 public:
  // Runs f(); returns false (keeping the exception when it is the first) if it threw.
  template <typename F>
  bool run(F&& f) noexcept {
    try {
      std::forward<F>(f)();
      return true;
    } catch (...) {
      if (!failed_.exchange(true)) error_ = std::current_exception();
      return false;
    }
  }
  // Whether any thread's work threw (lets the others skip theirs).
  bool failed() const noexcept { return failed_.load(std::memory_order_relaxed); }
  // After the region: rethrows the first exception, if any.
  void rethrow() const {
    if (failed_.load()) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

}  // namespace luab
