// Trace rasterisation on the CPU: OpenMP over the batch, one sample's map per thread.
//
// The splat is separable: a normalised isotropic Gaussian at (px, py) is gx(j) * gy(i) / (2 pi sigma^2),
// truncated to the square of pixel centres within 4 sigma of the point along x and along y (the footprint
// of rasterize.py, decided by the same float32 predicate in every backend). Each point costs W + H
// exponentials (one vectorised luab::vexp call per sample) and a rank-1 update of its footprint only.
// Sums run in float64, the result is rounded once to float32.
#include "ops/rasterize.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/vmath.hpp"

namespace luab::ops {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Error codes of one row, reported (with `where`) after the parallel loop: exceptions cannot leave it.
enum Code : int { kOk = 0, kRow, kOffsets, kBox, kPoint, kClickOffsets, kClick, kInternal };

// prepare's answer for a candidate span longer than span_bound allows: never expected, but checked, since the
// factors are written into a buffer sized by that bound.
constexpr int64_t kSpanOverflow = -2;

constexpr float kMaxArg = 8.f;  // (4 sigma)^2 / (2 sigma^2): the footprint's edge, see rasterize.py

// A thread's scratch, allocated before the parallel region (nothing in the region allocates or throws). A sample's
// points are splatted in chunks of at most `chunk` points, so the scratch is bounded whatever sigma and the
// number of points are: a Gaussian wider than the map is cut to the map (its span never exceeds the map's side).
struct Splat {
  // Per point, only the candidate span of its footprint (the footprint's pixels plus a margin, clipped to
  // the map) is evaluated: [x0, x1) columns and [y0, y1) rows, their factors packed in g at off.
  std::vector<double> g;       // [chunk * (span_x + span_y)]: packed gx then gy per point (0 outside the footprint)
  std::vector<double> weight;  // [chunk]: the point's mass times the Gaussian's normalisation
  std::vector<int64_t> span;   // [chunk, 5]: x0, x1, y0, y1, off
  std::vector<double> heat;    // [H, W]: the sample's map, summed in float64
};

// Doubles of Gaussian factors per thread (512 KiB, about an L2): sets the chunk of points splatted at a time.
constexpr int64_t kSplatBudget = int64_t{1} << 16;

// Most pixels of one axis of n that a point's candidate span can hold: ceil(p + 4 sigma) + 1 - (floor(p - 4 sigma)
// - 1) <= 8 sigma + 4 (+1 for the rounding of p -/+ 4 sigma), and never more than the map.
inline int64_t span_bound(float sigma, int64_t n) {
  const double s = std::floor(8.0 * static_cast<double>(sigma)) + 5.0;
  return s < static_cast<double>(n) ? static_cast<int64_t>(s) : n;
}

// exp's argument at pixel centre c: -(d * d * inv) in float32, or +1 (a marker: exp > 1 is impossible for
// a kept pixel) outside the footprint.
inline double arg_at(int64_t c, float p, float inv_two_s2) {
  const float d = (static_cast<float>(c) + 0.5f) - p;
  const float a = d * d * inv_two_s2;
  return a <= kMaxArg ? -static_cast<double>(a) : 1.0;
}

// [lo, hi) of the pixels whose centre may lie within 4 sigma of p (one pixel of margin each side: the exact
// float32 test in arg_at decides), clipped to [0, n). Done in double: p may be huge for a point far outside
// (or +-inf for a box narrower than float32 resolves: an empty span).
inline void candidates(float p, float sigma, int64_t n, int64_t* lo, int64_t* hi) {
  const double reach = 4.0 * static_cast<double>(sigma);
  if (std::isnan(p)) {
    *lo = *hi = 0;
    return;
  }
  *lo = static_cast<int64_t>(std::clamp(std::floor(static_cast<double>(p) - reach) - 1.0, 0.0, double(n)));
  *hi = static_cast<int64_t>(std::clamp(std::ceil(static_cast<double>(p) + reach) + 1.0, 0.0, double(n)));
}

// Maps points[c0:c1] of the sample that owns points[s:e] into its crop and fills their Gaussians' factors.
// Returns the index of the first non-finite point, or -1 (or kSpanOverflow: a span beyond span_bound, a bug).
int64_t prepare(const RasterizeArgs& a, const float* pts, const int64_t* times, int64_t c0, int64_t c1, int64_t e,
                const float* box, bool flip, float mass, Splat& sp) {
  const int64_t n = c1 - c0, W = a.W, H = a.H;
  const float two_s2 = 2.f * a.sigma * a.sigma, inv_two_s2 = 1.f / two_s2;
  const double norm = 1.0 / (kPi * static_cast<double>(two_s2));  // 1 / (2 pi sigma^2)
  double* g = sp.g.data();
  int64_t used = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = c0 + i;  // the point's index in pts
    const float x = pts[2 * k], y = pts[2 * k + 1];
    if (!std::isfinite(x) || !std::isfinite(y)) return k;
    // the project's crop convention (luab_fast/byproducts/targets.py to_crop), same float32 operations
    float u = (x - box[0]) / (box[2] - box[0]);
    const float v = (y - box[1]) / (box[3] - box[1]);
    if (flip) u = 1.f - u;
    const float px = u * static_cast<float>(W), py = v * static_cast<float>(H);
    int64_t* sp5 = sp.span.data() + 5 * i;
    candidates(px, a.sigma, W, sp5, sp5 + 1);
    candidates(py, a.sigma, H, sp5 + 2, sp5 + 3);
    sp5[4] = used;
    if (used + (sp5[1] - sp5[0]) + (sp5[3] - sp5[2]) > static_cast<int64_t>(sp.g.size())) return kSpanOverflow;
    for (int64_t j = sp5[0]; j < sp5[1]; ++j) g[used++] = arg_at(j, px, inv_two_s2);
    for (int64_t r = sp5[2]; r < sp5[3]; ++r) g[used++] = arg_at(r, py, inv_two_s2);
    double w = mass;
    if (times != nullptr) {  // dwell: time until the next point of the sample, capped; see rasterize.py
      const int64_t dt = k + 1 < e ? times[k + 1] - times[k] : -1;
      const double ms = dt >= 0 ? std::min(static_cast<double>(dt), static_cast<double>(a.dwell_cap_ms))
                                : static_cast<double>(a.dwell_cap_ms);
      w = ms / 1000.0;
    }
    sp.weight[static_cast<size_t>(i)] = w * norm;
  }
  luab::vexp(g, used);  // arguments in [-8, 1]: libmvec's accurate range
  for (int64_t j = 0; j < used; ++j) g[j] = g[j] > 1.5 ? 0.0 : g[j];  // exp(+1) marks a pixel outside the footprint
  return -1;
}

// heat[H, W] += sum over the prepared points of weight * gy (x) gx over their spans. AVX2 clone where the
// CPU has it.
__attribute__((target_clones("avx2", "default"))) void accumulate(const Splat& sp, int64_t n, int64_t W,
                                                                   double* heat) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* sp5 = sp.span.data() + 5 * i;
    const int64_t x0 = sp5[0], x1 = sp5[1], y0 = sp5[2], y1 = sp5[3];
    const double* gx = sp.g.data() + sp5[4];
    const double* gy = gx + (x1 - x0);
    const double w = sp.weight[static_cast<size_t>(i)];
    for (int64_t r = y0; r < y1; ++r) {
      const double c = w * gy[r - y0];
      if (c == 0.0) continue;  // the row is outside the footprint
      double* out = heat + r * W;
      for (int64_t j = x0; j < x1; ++j) out[j] += c * gx[j - x0];
    }
  }
}

// Splats points[s:e] (or clicks) of one sample onto sp.heat, `chunk` points at a time (the same additions in the
// same order as in one go). Returns the index of the first non-finite point, or -1.
int64_t splat_sample(const RasterizeArgs& a, const float* pts, const int64_t* times, int64_t s, int64_t e,
                     const float* box, bool flip, float mass, int64_t chunk, Splat& sp) {
  for (int64_t c0 = s; c0 < e; c0 += chunk) {
    const int64_t c1 = std::min(e, c0 + chunk);
    const int64_t bad = prepare(a, pts, times, c0, c1, e, box, flip, mass, sp);
    if (bad != -1) return bad;
    accumulate(sp, c1 - c0, a.W, sp.heat.data());
  }
  return -1;
}

int rasterize_row(const RasterizeArgs& a, int64_t b, int64_t chunk, Splat& sp, float* out, int64_t* where) {
  const int64_t row = a.rows[b];
  if (row < 0 || row >= a.N) return *where = row, kRow;
  const int64_t s = a.offsets[row], e = a.offsets[row + 1];
  if (s < 0 || s > e || e > a.P) return *where = row, kOffsets;
  const float* box = a.boxes + 4 * b;
  for (int k = 0; k < 4; ++k)
    if (!std::isfinite(box[k]) || box[k] < 0.f || box[k] > 1.f) return *where = k, kBox;
  if (!(box[0] < box[2]) || !(box[1] < box[3])) return *where = 0, kBox;
  const bool flip = a.flips[b] != 0;
  std::vector<double>& heat = sp.heat;
  std::fill(heat.begin(), heat.end(), 0.0);

  int64_t bad = splat_sample(a, a.points, a.dwell ? a.times : nullptr, s, e, box, flip, 1.f, chunk, sp);
  if (bad == kSpanOverflow) return kInternal;
  if (bad >= 0) return *where = bad, kPoint;
  if (a.click_points != nullptr) {
    const int64_t cs = a.click_offsets[row], ce = a.click_offsets[row + 1];
    if (cs < 0 || cs > ce || ce > a.Q) return *where = row, kClickOffsets;
    bad = splat_sample(a, a.click_points, nullptr, cs, ce, box, flip, a.click_mass, chunk, sp);
    if (bad == kSpanOverflow) return kInternal;
    if (bad >= 0) return *where = bad, kClick;
  }

  double scale = 1.0;
  if (a.normalize == Normalize::kSum) {
    double total = 0.0;
    for (double v : heat) total += v;
    scale = total > 0.0 ? 1.0 / total : 1.0;  // an empty map stays all zeros
  } else if (a.normalize == Normalize::kMax) {
    const double m = *std::max_element(heat.begin(), heat.end());
    scale = m > 0.0 ? 1.0 / m : 1.0;
  }
  float* o = out + b * a.H * a.W;
  for (int64_t k = 0; k < a.H * a.W; ++k) o[k] = static_cast<float>(heat[static_cast<size_t>(k)] * scale);
  return kOk;
}

void report(const RasterizeArgs& a, const std::vector<int>& code, const std::vector<int64_t>& where) {
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t w = where[static_cast<size_t>(b)];
    switch (code[static_cast<size_t>(b)]) {
      case kOk: break;
      case kRow: luab::fail("rows[", b, "] must be in [0, ", a.N, "), got ", w);
      case kOffsets:
        luab::fail("offsets must be non-decreasing within [0, P=", a.P, "], got offsets[", w, "]=", a.offsets[w],
                   ", offsets[", w + 1, "]=", a.offsets[w + 1]);
      case kBox:
        luab::fail("boxes[", b, "] must be finite (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, "
                   "got (", a.boxes[4 * b], ", ", a.boxes[4 * b + 1], ", ", a.boxes[4 * b + 2], ", ",
                   a.boxes[4 * b + 3], ")");
      case kPoint: luab::fail("points must be finite, got (", a.points[2 * w], ", ", a.points[2 * w + 1], ") at ", w);
      case kClickOffsets:
        luab::fail("click offsets must be non-decreasing within [0, Q=", a.Q, "], got [", a.click_offsets[w], ", ",
                   a.click_offsets[w + 1], "] at row ", w);
      case kInternal:
        luab::fail("rasterize_traces: a Gaussian's span exceeded its bound for rows[", b, "] (sigma=", a.sigma,
                   "); this is a bug, please report it");
      default:
        luab::fail("clicks must be finite, got (", a.click_points[2 * w], ", ", a.click_points[2 * w + 1], ") at ",
                   w);
    }
  }
}

}  // namespace

void rasterize_traces(const RasterizeArgs& a, float* out) {
  LUAB_CHECK(a.H >= 1 && a.W >= 1, "out_size must be >= 1, got (", a.H, ", ", a.W, ")");
  // 2 sigma^2 and its inverse in float32 (the constants of every backend) must be finite and nonzero: beyond
  // ~1.3e19 the map would come out all zeros, below ~1e-19 all NaN tests, instead of what the Gaussian gives
  const float two_s2 = 2.f * a.sigma * a.sigma;
  LUAB_CHECK(std::isfinite(a.sigma) && a.sigma > 0.f && std::isnormal(two_s2) && std::isfinite(1.f / two_s2),
             "sigma must be finite and > 0, with 2 sigma^2 a finite nonzero float32 (sigma in about [1e-19, 1e19] "
             "output pixels), got ", a.sigma);
  LUAB_CHECK(std::isfinite(a.click_mass) && a.click_mass >= 0.f, "click_mass must be finite and >= 0, got ",
             a.click_mass);
  LUAB_CHECK(!a.dwell || (std::isfinite(a.dwell_cap_ms) && a.dwell_cap_ms > 0.f),
             "dwell_cap_ms must be finite and > 0, got ", a.dwell_cap_ms);
  LUAB_CHECK(a.N >= 0 && a.P >= 0 && a.offsets[0] == 0 && a.offsets[a.N] == a.P,
             "offsets must start at 0 and end at P=", a.P, ", got ", a.offsets[0], " ... ", a.offsets[a.N]);
  LUAB_CHECK(a.click_points == nullptr || (a.click_offsets[0] == 0 && a.click_offsets[a.N] == a.Q),
             "click offsets must start at 0 and end at Q=", a.Q);
  const int64_t HW = luab::checked_size("out_size h * w", {a.H, a.W});
  luab::checked_size("rows * h * w (the output)", {a.B, a.H, a.W}, sizeof(float));
  std::vector<int> code(static_cast<size_t>(a.B), kOk);
  std::vector<int64_t> where(static_cast<size_t>(a.B), 0);
  if (a.B == 0) return;
  // every thread's scratch, before the region: no allocation (and so no exception) inside it
  const int nt = static_cast<int>(std::min<int64_t>(luab::threads_or_default(a.n_threads), a.B));
  const int64_t per_point = span_bound(a.sigma, a.W) + span_bound(a.sigma, a.H);
  const int64_t chunk = std::max<int64_t>(1, kSplatBudget / per_point);
  std::vector<Splat> scratch(static_cast<size_t>(nt));
  for (Splat& sp : scratch) {
    sp.g.resize(static_cast<size_t>(chunk * per_point));
    sp.weight.resize(static_cast<size_t>(chunk));
    sp.span.resize(static_cast<size_t>(5 * chunk));
    sp.heat.resize(static_cast<size_t>(HW));
  }
#pragma omp parallel num_threads(nt)
  {
    Splat& sp = scratch[static_cast<size_t>(omp_get_thread_num())];
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < a.B; ++b) code[static_cast<size_t>(b)] = rasterize_row(a, b, chunk, sp, out, &where[b]);
  }
  report(a, code, where);
}

}  // namespace luab::ops
