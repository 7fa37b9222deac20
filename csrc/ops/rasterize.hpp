// Trace rasterisation (LUAB byproducts, Han et al., "Neglected Free Lunch", ICCV 2023): mouse-trace points
// and clicks of each sample, mapped into its crop (then flipped), each splatting a normalised isotropic
// Gaussian of `sigma` output pixels onto an h x w attention map (pixel centres at i + 0.5).
#pragma once

#include <cstdint>

namespace luab::ops {

enum class Normalize : int { kNone = 0, kSum = 1, kMax = 2 };

struct RasterizeArgs {
  const float* points;          // [P, 2] (x, y) normalised to the original image, finite
  const int64_t* times;         // [P] ms; read only when dwell
  const int64_t* offsets;       // [N + 1]: sample n owns points[offsets[n]:offsets[n + 1]]
  int64_t P, N;
  const float* click_points;    // [Q, 2] or nullptr
  const int64_t* click_offsets; // [N + 1] or nullptr
  int64_t Q;
  const int64_t* rows;          // [B] in [0, N)
  const float* boxes;           // [B, 4] (x0, y0, x1, y1), 0 <= x0 < x1 <= 1
  const uint8_t* flips;         // [B] 0/1
  int64_t B, H, W;
  float sigma;                  // > 0, in output pixels
  bool dwell;                   // weight = min(dt, dwell_cap_ms) / 1000 s, else 1 per point
  float dwell_cap_ms;
  float click_mass;             // weight of each click
  Normalize normalize;
  int n_threads;                // <= 0: OpenMP's default
};

// Validates what it reads (throws std::invalid_argument naming the argument) and writes out[B, H, W].
void rasterize_traces(const RasterizeArgs& a, float* out);

}  // namespace luab::ops
