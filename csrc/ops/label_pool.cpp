// Sparse LabelPooling, bit-identical to torchvision's CPU roi_align (../shared/docs/label-pooling.md section 7).
//
// torchvision's kernel (roi_align_kernel.cpp, aligned=False, sampling_ratio=-1) computes, per output
// channel c and bin, acc_c = +0; for each sample (iy outer, ix inner):
//   acc_c += w1*D[c,p1] + w2*D[c,p2] + w3*D[c,p3] + w4*D[c,p4]      (left to right, all float32)
// then acc_c / count. D[c,cell] is +0 for classes absent at the cell, so w*D = +0 there. Here every
// sample visits its 4 corners in order and, at each corner, the K entries of that cell; a class's corner
// sum s_c therefore receives exactly its present products, in corner order, and then acc_c += s_c in
// sample order. The omitted +0 terms change nothing: x + (+0) == x for every x except -0, and a sum
// that starts at +0 can only differ in the sign of a zero, which acc_c (starting at +0) absorbs
// (+0 + -0 == +0); acc_c never becomes -0 (x + y == -0 needs x == y == -0), so adding a +0 is exact
// everywhere. Classes are distinct along K at a cell (validated), so a class gets at most one
// product per corner, as in the dense map. Note: the file is built with -std=c++17 (ISO), under which
// GCC does not contract a*b+c into an FMA; an FMA would break bit-exactness.
#include "ops/label_pool.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/vmath.hpp"

namespace luab::ops {
namespace {

struct Sample {
  int32_t pos[4];  // corner cells y*S + x, in torchvision's order (y0,x0) (y0,x1) (y1,x0) (y1,x1)
  float w[4];      // w1..w4
};

template <typename I>
int64_t index_at(const void* p, int64_t i) {
  return static_cast<int64_t>(static_cast<const I*>(p)[i]);
}

int64_t index_at(const LabelPoolArgs& a, int64_t i) {
  switch (a.index_bytes) {
    case 2: return index_at<int16_t>(a.indices, i);
    case 4: return index_at<int32_t>(a.indices, i);
    default: return index_at<int64_t>(a.indices, i);
  }
}

// 0 if row b is valid, else a code: 1 box, 2 score, 3 index range, 4 duplicate index.
template <typename I>
int validate_row(const LabelPoolArgs& a, int64_t b, int64_t* where) {
  const float* bx = a.boxes + b * 4;
  for (int n = 0; n < 4; ++n)
    if (!std::isfinite(bx[n]) || bx[n] < 0.f || bx[n] > 1.f) return *where = n, 1;
  if (!(bx[0] < bx[2]) || !(bx[1] < bx[3])) return *where = 0, 1;
  const int64_t SS = a.S * a.S, base = b * a.K * SS;
  const float* sc = a.scores + base;
  // Fast paths: branch-free integer reductions (a bool reduction, or std::isfinite, keeps GCC scalar; these
  // vectorise), then the slow paths locate the first problem for the message.
  uint32_t nonfinite = 0;
  for (int64_t i = 0; i < a.K * SS; ++i) {
    uint32_t bits;
    std::memcpy(&bits, sc + i, sizeof bits);
    nonfinite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);  // exponent all ones: inf/NaN
  }
  if (nonfinite)
    for (int64_t i = 0; i < a.K * SS; ++i)
      if (!std::isfinite(sc[i])) return *where = i, 2;
  const I* ix = static_cast<const I*>(a.indices) + base;
  const I C = static_cast<I>(std::min<int64_t>(a.C, std::numeric_limits<I>::max()));
  const bool all_fit = a.C <= static_cast<int64_t>(std::numeric_limits<I>::max());
  uint32_t bad = 0;
  if (all_fit) {
    for (int64_t i = 0; i < a.K * SS; ++i) bad |= static_cast<uint32_t>((ix[i] < 0) | (ix[i] >= C));
  } else {  // num_classes beyond I's range: only negative indices can be out of range
    for (int64_t i = 0; i < a.K * SS; ++i) bad |= static_cast<uint32_t>(ix[i] < 0);
  }
  for (int64_t k = 1; k < a.K; ++k)
    for (int64_t k2 = 0; k2 < k; ++k2) {
      const I* x = ix + k * SS;
      const I* y = ix + k2 * SS;
      for (int64_t cell = 0; cell < SS; ++cell) bad |= static_cast<uint32_t>(x[cell] == y[cell]);
    }
  if (!bad) return 0;
  for (int64_t cell = 0; cell < SS; ++cell) {  // slow path: locate the first problem for the message
    for (int64_t k = 0; k < a.K; ++k) {
      const int64_t c = static_cast<int64_t>(ix[k * SS + cell]);
      if (c < 0 || c >= a.C) return *where = k * SS + cell, 3;
      for (int64_t k2 = 0; k2 < k; ++k2)
        if (static_cast<int64_t>(ix[k2 * SS + cell]) == c) return *where = k * SS + cell, 4;
    }
  }
  return 0;
}

void check_args(const LabelPoolArgs& a) {
  LUAB_CHECK(a.index_bytes == 2 || a.index_bytes == 4 || a.index_bytes == 8,
             "indices must be int16, int32 or int64");
  LUAB_CHECK(a.K >= 1 && a.S >= 1 && a.C >= 1 && a.B >= 0, "scores must be [B, K, S, S] with K, S >= 1 and "
             "num_classes >= 1, got B=", a.B, " K=", a.K, " S=", a.S, " num_classes=", a.C);
  LUAB_CHECK(a.out_h >= 1 && a.out_w >= 1, "output_size must be >= 1, got (", a.out_h, ", ", a.out_w, ")");
  LUAB_CHECK(a.S <= 46340, "scores' map side S must be <= 46340, got ", a.S);  // cell ids are int32
  // the classes a bin touched are listed as int32
  LUAB_CHECK(a.C <= std::numeric_limits<int32_t>::max(), "num_classes must be <= ",
             std::numeric_limits<int32_t>::max(), " (class ids are int32), got ", a.C);
  luab::checked_size("B * num_classes * out_h * out_w (the output)", {a.B, a.C, a.out_h, a.out_w}, sizeof(float));
}

// Throws for the first invalid row (code/where from validate_row), if any.
void report(const LabelPoolArgs& a, const std::vector<int>& code, const std::vector<int64_t>& where) {
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t w = where[b], SS = a.S * a.S;
    switch (code[b]) {
      case 0: break;
      case 1:
        luab::fail("boxes[", b, "] must be finite (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got (",
                   a.boxes[b * 4], ", ", a.boxes[b * 4 + 1], ", ", a.boxes[b * 4 + 2], ", ", a.boxes[b * 4 + 3], ")");
      case 2:
        luab::fail("scores must be finite, got ", a.scores[b * a.K * SS + w], " at [", b, ", ", w / SS, ", ",
                   (w % SS) / a.S, ", ", w % a.S, "]");
      case 3:
        luab::fail("indices must lie in [0, num_classes=", a.C, "), got ", index_at(a, b * a.K * SS + w), " at [",
                   b, ", ", w / SS, ", ", (w % SS) / a.S, ", ", w % a.S, "]");
      default:
        luab::fail("indices must be distinct along K at each cell, got ", index_at(a, b * a.K * SS + w),
                   " twice at [", b, ", :, ", (w % SS) / a.S, ", ", w % a.S, "]");
    }
  }
}

// torchvision's pre_calc_for_bilinear_interpolate for one bin, samples in (iy, ix) order; samples outside
// [-1, S] are dropped (torchvision gives them zero weights, which add only +0 / -0).
void bin_samples(float start_h, float start_w, float bin_h, float bin_w, int64_t ph, int64_t pw, int gh, int gw,
                 int64_t S, std::vector<Sample>& out) {
  out.clear();
  const float H = static_cast<float>(S);
  for (int iy = 0; iy < gh; ++iy) {
    const float yy = start_h + static_cast<float>(ph) * bin_h +
                     static_cast<float>(iy + .5f) * bin_h / static_cast<float>(gh);
    for (int ix = 0; ix < gw; ++ix) {
      const float xx = start_w + static_cast<float>(pw) * bin_w +
                       static_cast<float>(ix + .5f) * bin_w / static_cast<float>(gw);
      float y = yy, x = xx;
      if (y < -1.0f || y > H || x < -1.0f || x > H) continue;
      if (y <= 0) y = 0;
      if (x <= 0) x = 0;
      int y_low = static_cast<int>(y), x_low = static_cast<int>(x), y_high, x_high;
      if (y_low >= S - 1) {
        y_high = y_low = static_cast<int>(S - 1);
        y = static_cast<float>(y_low);
      } else {
        y_high = y_low + 1;
      }
      if (x_low >= S - 1) {
        x_high = x_low = static_cast<int>(S - 1);
        x = static_cast<float>(x_low);
      } else {
        x_high = x_low + 1;
      }
      const float ly = y - static_cast<float>(y_low), lx = x - static_cast<float>(x_low);
      const float hy = 1.f - ly, hx = 1.f - lx;
      Sample s;
      const int32_t Si = static_cast<int32_t>(S);
      s.pos[0] = y_low * Si + x_low;
      s.pos[1] = y_low * Si + x_high;
      s.pos[2] = y_high * Si + x_low;
      s.pos[3] = y_high * Si + x_high;
      s.w[0] = hy * hx;
      s.w[1] = hy * lx;
      s.w[2] = ly * hx;
      s.w[3] = ly * lx;
      out.push_back(s);
    }
  }
}

// ReLabel's target over the C strided values p[c * P] (../shared/docs/label-pooling.md section 6). Every class not in
// `listed` (the classes the bin's samples touched) is exactly 0, so they all share exp(0 - m) and only the
// listed ones need an exp, done in float64 by luab::vexp (SIMD, <= 4 ulp of a double). Sum in float64; the
// result is within ~1 ulp of torch's float32 softmax (docs section 7 step 2 asks for 1e-6 relative).
// Nothing here walks all C classes but the final fill, which the compiler vectorises.
void softmax_classes(float* p, int64_t C, int64_t P, const std::vector<int32_t>& listed, int64_t n,
                     std::vector<double>& buf) {
  float m = n < C ? 0.f : p[static_cast<int64_t>(listed[0]) * P];  // the unlisted zeros take part in the max
  for (int64_t j = 0; j < n; ++j) m = std::max(m, p[static_cast<int64_t>(listed[j]) * P]);
  for (int64_t j = 0; j < n; ++j) buf[j] = static_cast<double>(p[static_cast<int64_t>(listed[j]) * P]) - m;
  buf[n] = -static_cast<double>(m);
  luab::vexp(buf.data(), n + 1);
  const double e0 = buf[n];
  double z = static_cast<double>(C - n) * e0;
  for (int64_t j = 0; j < n; ++j) z += buf[j];
  const double inv = 1.0 / z;
  const float t0 = static_cast<float>(e0 * inv);
  if (P == 1) {
    std::fill(p, p + C, t0);
  } else {
    for (int64_t c = 0; c < C; ++c) p[c * P] = t0;
  }
  for (int64_t j = 0; j < n; ++j) p[static_cast<int64_t>(listed[j]) * P] = static_cast<float>(buf[j] * inv);
}

// A thread's scratch. s[c]: the current sample's corner sum of class c; +0 everywhere between samples.
struct PoolScratch {
  std::vector<float> s;
  std::vector<int64_t> touched;
  std::vector<Sample> samples;
  std::vector<double> ebuf;     // softmax scratch
  std::vector<int32_t> listed;  // classes the bin touched (+1: a write-past slot)
  std::vector<uint8_t> seen;

  PoolScratch(const LabelPoolArgs& a)
      : s(static_cast<size_t>(a.C), 0.f), touched(static_cast<size_t>(4 * a.K)),
        ebuf(a.softmax ? static_cast<size_t>(a.C + 1) : 0), listed(static_cast<size_t>(a.C) + 1),
        seen(static_cast<size_t>(a.C), 0) {}
};

// Pools validated row b into ob = out[b] (already zeroed). Allocates only through bin_samples' vector.
template <typename I>
void pool_row(const LabelPoolArgs& a, int64_t b, float* ob, PoolScratch& w) {
  const int64_t S = a.S, SS = S * S, K = a.K, C = a.C, P = a.out_h * a.out_w;
  const float Sf = static_cast<float>(S);
  // plain pointers in locals: the compiler keeps them in registers across the byte stores to seen[], which may
  // alias any object in memory (the vectors' own fields included)
  float* s = w.s.data();
  int64_t* touched = w.touched.data();
  int32_t* listed = w.listed.data();
  uint8_t* seen = w.seen.data();
  const float* bx = a.boxes + b * 4;
  // Step 0: roi_align row = (x1, y1, x2, y2); legacy hands (y0, x0, y1, x1).
  const float e[4] = {a.legacy ? bx[1] : bx[0], a.legacy ? bx[0] : bx[1], a.legacy ? bx[3] : bx[2],
                      a.legacy ? bx[2] : bx[3]};
  float r[4];
  for (int n = 0; n < 4; ++n) r[n] = e[n] * Sf - 0.5f;  // fl(fl(e*S) - 0.5); spatial_scale 1 is exact
  const float roi_w = std::max(r[2] - r[0], 1.f), roi_h = std::max(r[3] - r[1], 1.f);
  const float bin_h = roi_h / static_cast<float>(a.out_h), bin_w = roi_w / static_cast<float>(a.out_w);
  const int gh = static_cast<int>(std::ceil(roi_h / static_cast<float>(a.out_h)));
  const int gw = static_cast<int>(std::ceil(roi_w / static_cast<float>(a.out_w)));
  const float count = static_cast<float>(std::max(gh * gw, 1));
  const float* sc = a.scores + b * K * SS;
  const I* ix = static_cast<const I*>(a.indices) + b * K * SS;
  for (int64_t ph = 0; ph < a.out_h; ++ph) {
    for (int64_t pw = 0; pw < a.out_w; ++pw) {
      float* acc = ob + ph * a.out_w + pw;  // acc[c * P]
      int64_t n_listed = 0;
      bin_samples(r[1], r[0], bin_h, bin_w, ph, pw, gh, gw, S, w.samples);
      for (const Sample& smp : w.samples) {
        // s_c = (((+0 + w1 v1) + w2 v2) + w3 v3) + w4 v4 over the corners where c is present, in corner
        // order (+0 + x == x up to the sign of a zero); then acc_c += s_c once per class: a class seen
        // at several corners is listed several times, and its later visits add the +0 left behind.
        int64_t n = 0;
        for (int q = 0; q < 4; ++q) {
          const float wq = smp.w[q];
          const int64_t cell = smp.pos[q];
          for (int64_t k = 0; k < K; ++k) {
            const int64_t c = static_cast<int64_t>(ix[k * SS + cell]);
            s[c] += wq * sc[k * SS + cell];
            touched[n++] = c;
          }
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t c = touched[j];
          acc[c * P] += s[c];
          s[c] = 0.f;
          listed[n_listed] = static_cast<int32_t>(c);
          n_listed += !seen[c];
          seen[c] = 1;
        }
      }
      // unlisted classes hold +0, and +0 / count is +0: only the listed ones need the division
      for (int64_t j = 0; j < n_listed; ++j) {
        const int64_t c = listed[j];
        acc[c * P] = acc[c * P] / count;
        seen[c] = 0;
      }
      if (a.softmax) softmax_classes(acc, C, P, w.listed, n_listed, w.ebuf);
    }
  }
}

// One parallel region (validation of row b, then its pooling): a second fork/join costs more than the
// checks when other OpenMP runtimes (torch's) hold the cores. The per-thread scratch (O(C)) and the samples of a
// bin are allocated inside it, so every allocation runs through `err` (an exception cannot leave the region),
// which the caller rethrows after it.
template <typename I>
void pool_rows(const LabelPoolArgs& a, float* out, std::vector<int>& code, std::vector<int64_t>& where,
               luab::FirstError& err) {
  const int64_t CP = a.C * a.out_h * a.out_w;
#pragma omp parallel num_threads(luab::threads_or_default(a.n_threads))
  {
    std::unique_ptr<PoolScratch> scratch;
    const bool ready = err.run([&] { scratch = std::make_unique<PoolScratch>(a); });
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < a.B; ++b) {
      float* ob = out + b * CP;
      std::fill(ob, ob + CP, 0.f);
      if (!ready || err.failed()) continue;  // the caller raises the error: no row is trusted
      if ((code[b] = validate_row<I>(a, b, &where[b])) != 0) continue;  // reported after the loop
      err.run([&] { pool_row<I>(a, b, ob, *scratch); });
    }
  }
}

}  // namespace

void label_pool(const LabelPoolArgs& a, float* out) {
  check_args(a);
  std::vector<int> code(static_cast<size_t>(a.B), 0);
  std::vector<int64_t> where(static_cast<size_t>(a.B), 0);
  luab::FirstError err;
  switch (a.index_bytes) {
    case 2: pool_rows<int16_t>(a, out, code, where, err); break;
    case 4: pool_rows<int32_t>(a, out, code, where, err); break;
    default: pool_rows<int64_t>(a, out, code, where, err); break;
  }
  err.rethrow();
  report(a, code, where);
}

}  // namespace luab::ops
