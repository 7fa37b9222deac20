// csv_rows.hpp: each thread formats a contiguous block of rows into its own string; the blocks are joined in order.
#include "csv_rows.hpp"

#include <omp.h>

#include <algorithm>
#include <charconv>

#include "common/parallel.hpp"

namespace luab::io {
namespace {

constexpr int64_t kRowsPerThread = 512;  // fewer rows a thread are not worth waking it for

void append_id(std::string& out, const std::string& id) {
  if (id.find_first_of(",\"\r\n") == std::string::npos) {
    out += id;
    return;
  }
  out += '"';
  for (char c : id) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

void format_block(const std::vector<std::string>& ids, const float* values, int64_t k, int64_t r0, int64_t r1,
                  std::string& out) {
  char buf[32];  // a float32's shortest form is at most 15 characters ("-1.1754944e-38")
  out.reserve(static_cast<size_t>((r1 - r0) * (k * 12 + 16)));
  for (int64_t r = r0; r < r1; ++r) {
    append_id(out, ids[r]);
    const float* row = values + r * k;
    for (int64_t c = 0; c < k; ++c) {
      out += ',';
      const auto res = std::to_chars(buf, buf + sizeof(buf), row[c]);
      out.append(buf, res.ptr);
    }
    out += '\n';
  }
}

}  // namespace

std::string csv_rows(const std::vector<std::string>& ids, const float* values, int64_t n, int64_t k, int n_threads) {
  const int nt = static_cast<int>(std::clamp<int64_t>(n / kRowsPerThread, 1, threads_or_default(n_threads)));
  std::vector<std::string> parts(nt);
  FirstError err;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    const int64_t r0 = n * t / nt, r1 = n * (t + 1) / nt;
    err.run([&] { format_block(ids, values, k, r0, r1, parts[t]); });
  }
  err.rethrow();
  if (nt == 1) return std::move(parts[0]);
  size_t total = 0;
  for (const std::string& p : parts) total += p.size();
  std::string out;
  out.reserve(total);
  for (const std::string& p : parts) out += p;
  return out;
}

}  // namespace luab::io
