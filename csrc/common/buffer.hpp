// A move-only array for the large EM tables. Rows of these tables are read in random order (one per
// label), so with 4 KiB pages nearly every read is a TLB miss; tables of 4 MiB and more are therefore
// allocated 2 MiB-aligned and marked MADV_HUGEPAGE (transparent huge pages, Linux), which measured
// ~2× faster E- and M-steps here. release() hands the memory to numpy (freed with std::free).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace luab {

struct Uninitialized {};

template <typename T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(size_t n, T fill) : Buffer(n, Uninitialized{}) {
    for (size_t i = 0; i < n; ++i) data_[i] = fill;
  }
  // Contents undefined: for tables every element of which is written before it is read.
  Buffer(size_t n, Uninitialized) : n_(n) {
    const size_t bytes = n * sizeof(T);
    constexpr size_t kHuge = size_t{2} << 20;
    if (bytes >= 2 * kHuge) {
      const size_t rounded = (bytes + kHuge - 1) / kHuge * kHuge;
      void* p = nullptr;
      if (posix_memalign(&p, kHuge, rounded) != 0) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      madvise(p, rounded, MADV_HUGEPAGE);  // advisory: ignored where THP is off
#endif
      data_ = static_cast<T*>(p);
    } else {
      data_ = static_cast<T*>(std::malloc(bytes > 0 ? bytes : 1));
      if (data_ == nullptr) throw std::bad_alloc();
    }
  }
  Buffer(const T* src, size_t n) : Buffer(n, Uninitialized{}) { std::memcpy(data_, src, n * sizeof(T)); }
  Buffer(Buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(data_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + n_; }
  // Gives up ownership; the caller frees with std::free.
  T* release() {
    n_ = 0;
    return std::exchange(data_, nullptr);
  }

 private:
  T* data_ = nullptr;
  size_t n_ = 0;
};

}  // namespace luab
